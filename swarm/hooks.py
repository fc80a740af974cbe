"""Small hooks around the handler call: error classification, metrics. Composed, not branched."""
from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Callable, Mapping, Sequence

from swarm import metrics
from swarm.context import Context
from swarm.effects import Effects
from swarm.envelope import Envelope
from swarm.errors import Abort, BackendError, Fault, PluginError, TableError, describe
from swarm.stage import Stage, TableSpec


@dataclasses.dataclass
class Call:
    stage: Stage
    ctx: Context
    env: Envelope
    attempts: int = 1
    declared: Mapping[str, TableSpec] | None = None  # the job's tables, when it declares any


Next = Callable[[Call], Effects]
Hook = Callable[[Call, Next], Effects]


def invoke(call: Call) -> Effects:
    """The innermost step: call the handler and collect what it returned."""
    return Effects.collect(call.stage.handler(call.ctx, call.env), call.declared)


def chain(hooks: Sequence[Hook], final: Next = invoke) -> Next:
    """``hooks[0]`` outermost, ``final`` innermost."""
    call_next = final
    for hook in reversed(hooks):
        call_next = _bind(hook, call_next)
    return call_next


def _bind(hook: Hook, call_next: Next) -> Next:
    return lambda call: hook(call, call_next)


class TracedFault(Fault):
    """A ``Fault`` made from an unexpected exception; carries its traceback."""

    def __init__(self, exc: BaseException):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        super().__init__(f"{describe(exc)}\n{text}")

    @property
    def reason(self) -> str:
        return str(self)  # the original exception's type and message, then its traceback


def classify(call: Call, call_next: Next) -> Effects:
    """Any exception becomes ``Fault`` (with traceback) or ``Abort`` (plugin bugs)."""
    try:
        return call_next(call)
    except (Fault, Abort):
        raise
    except BackendError:
        raise  # the tables were unreachable: an outage, which the message waits out; not the handler's fault
    except PluginError as exc:
        raise Abort(f"invalid effects from stage {call.stage.name}: {exc}") from None
    except TableError as exc:  # a table or family that does not exist: waiting will not make it
        raise Abort(f"stage {call.stage.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a handler's bug must not stop the worker
        raise TracedFault(exc) from None


def measure(call: Call, call_next: Next) -> Effects:
    """Handler latency and failures, per job and stage."""
    started = time.perf_counter()
    try:
        return call_next(call)
    except Fault:
        metrics.HANDLER_ERRORS.labels(call.ctx.job, call.stage.name, "fault").inc()
        raise
    except Abort:
        metrics.HANDLER_ERRORS.labels(call.ctx.job, call.stage.name, "abort").inc()
        raise
    finally:
        metrics.HANDLER_SECONDS.labels(call.ctx.job, call.stage.name).observe(time.perf_counter() - started)


DEFAULT_HOOKS: tuple[Hook, ...] = (measure, classify)
