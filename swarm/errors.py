"""Every exception Swarm raises, under one root: ``SwarmError``."""
from typing import Iterable

from swarm.limits import MAX_REASON_CHARS


def describe(exc: BaseException) -> str:
    """``Type: message``: how every reason Swarm records names an exception."""
    text = str(exc).strip() or _SILENT.get(type(exc).__name__, "(no message)")
    return f"{type(exc).__name__}: {text}"


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` within ``limit`` characters, keeping its start and its end (a traceback's last line)."""
    if len(text) <= limit:
        return text
    marker = f"\n... ({len(text) - limit} characters cut) ...\n"
    keep = max(0, limit - len(marker))
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2):]


# Exceptions whose message is empty, and what to say instead.
_SILENT = {"StackError": "nested deeper than the decoder allows"}



class SwarmError(Exception):
    """Root of Swarm's exceptions."""


class ConfigError(SwarmError):
    """Configuration is missing or wrong; the message names the key."""


class LedgerNotFound(ConfigError):
    """A command that uses an existing ledger found none where the URL points: it never creates one."""


class BadMessage(SwarmError):
    """A message body that cannot be accepted; the message says why.

    Raised while decoding or validating; the worker dead-letters the body
    with ``str(error)`` as the reason and goes on.
    """


class PluginError(SwarmError):
    """A job plugin that cannot be loaded or declares something invalid."""


class BackendError(SwarmError):
    """A broker, ledger or table store failed; the operation may be retried."""


class QueueFull(BackendError):
    """A bounded stage queue (``max_queue``) refused messages: it holds as many as it may.

    Not an outage and not a fault: the publisher waits and publishes them
    again once the queue has room. ``queues`` are the full queues (``queue``
    the first); ``refused`` the indexes, in the batch given to ``publish``, of
    the messages not taken: the others are on their queues, confirmed.
    """

    def __init__(self, queues: Iterable[str], refused: Iterable[int] = (), text: str = ""):
        self.queues = tuple(sorted(set(queues)))
        self.refused = frozenset(refused)
        self.queue = self.queues[0] if self.queues else "?"
        super().__init__(text or f"queue {', '.join(self.queues) or '?'} is full: {len(self.refused)} message(s) "
                                 "refused; publish them again once it has room")


class TableError(SwarmError):
    """A table or column family that does not exist, or a write to one the job does not declare.

    Fixed by creating or declaring it, never by waiting: a handler's message
    that meets one is aborted with this reason, and a master refuses to start.
    """


class BackendRefused(BackendError):
    """A backend answered and refused: a wrong password, a missing permission or database, a certificate
    that does not verify. Waiting cannot fix it: a command stops at once with the config error's code.
    """


class MasterLockLost(BackendError):
    """A master's lock lapsed while it ran (cut off from the ledger, or frozen), and another master may have run
    meanwhile: what this one knows of the run is stale. It resumes from the ledger once it holds the lock again.
    """

    def __init__(self, key: str, why: str):
        super().__init__(f"the master's lock on {key} lapsed ({why}); nothing more was done on it")
        self.key = key


class MasterLocked(SwarmError):
    """Another master already runs this job and params."""

    def __init__(self, key: str, holder: str):
        super().__init__(f"another master already runs {key}: held by {holder}")
        self.key = key
        self.holder = holder


class RerunRefused(SwarmError):
    """A rerun that cannot start, because of what was asked (a date that never ran, or has not finished)."""


class RerunLocked(RerunRefused):
    """A rerun that cannot start because a master holds the date's one-master lock right now."""


class PublishRefused(SwarmError):
    """A publication or decision that cannot be made: the run is not held, or another is being published."""


class Fenced(SwarmError):
    """A worker's claim on a message was taken over; its result must not commit."""


# Raised by handlers --------------------------------------------------------


class HandlerError(SwarmError):
    """Base for what a handler raises on purpose."""

    @property
    def reason(self) -> str:
        """What the ledger and a dead letter record: the type and the message."""
        return describe(self)


class Fault(HandlerError):
    """Transient failure: retried with backoff up to the stage's limit, then dead-lettered."""


class Abort(HandlerError):
    """Permanent failure: the chunk and its dependants stop and the run fails with this reason."""
