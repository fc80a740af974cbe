"""Calling a handler: what it returned collected as effects, what it raised classified.

A handler's exception becomes ``Fault`` (with its traceback: retried) or
``Abort`` (bad effects, a table that does not exist: permanent); a
``BackendError`` stays one (the tables were unreachable: an outage, which the
message waits out without spending a retry).
"""
from __future__ import annotations

import traceback
from typing import Mapping

from swarm.context import Context
from swarm.effects import Effects
from swarm.envelope import Envelope
from swarm.errors import Abort, BackendError, Fault, PluginError, TableError, describe
from swarm.stage import Stage, TableSpec


class TracedFault(Fault):
    """A ``Fault`` made from an unexpected exception; carries its traceback."""

    def __init__(self, exc: BaseException):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        super().__init__(f"{describe(exc)}\n{text}")

    @property
    def reason(self) -> str:
        return str(self)  # the original exception's type and message, then its traceback


def call_handler(stage: Stage, ctx: Context, env: Envelope, declared: Mapping[str, TableSpec] | None) -> Effects:
    """The handler's effects, checked; raises ``Fault``, ``Abort`` or ``BackendError`` only."""
    try:
        return Effects.collect(stage.handler(ctx, env), declared)
    except (Fault, Abort, BackendError):
        raise  # a BackendError: the tables were unreachable, an outage the message waits out
    except PluginError as exc:
        raise Abort(f"invalid effects from stage {stage.name}: {exc}") from None
    except TableError as exc:  # a table or family that does not exist: waiting will not make it
        raise Abort(f"stage {stage.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a handler's bug must not stop the worker
        raise TracedFault(exc) from None
