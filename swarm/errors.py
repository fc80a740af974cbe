"""Every exception Swarm raises, under one root: ``SwarmError``."""


class SwarmError(Exception):
    """Root of Swarm's exceptions."""


class ConfigError(SwarmError):
    """Configuration is missing or wrong; the message names the key."""


class BadMessage(SwarmError):
    """A message body that cannot be accepted; the message says why.

    Raised while decoding or validating; the worker dead-letters the body
    with ``str(error)`` as the reason and goes on.
    """


class PluginError(SwarmError):
    """A job plugin that cannot be loaded or declares something invalid."""


class BackendError(SwarmError):
    """A broker, ledger or table store failed; the operation may be retried."""


class MasterLocked(SwarmError):
    """Another master already runs this job and params."""

    def __init__(self, key: str, holder: str):
        super().__init__(f"another master already runs {key}: held by {holder}")
        self.key = key
        self.holder = holder


class Fenced(SwarmError):
    """A worker's claim on a message was taken over; its result must not commit."""


# Raised by handlers --------------------------------------------------------


class HandlerError(SwarmError):
    """Base for what a handler raises on purpose."""


class Fault(HandlerError):
    """Transient failure: retried with backoff up to the stage's limit, then dead-lettered."""


class Abort(HandlerError):
    """Permanent failure: the chunk and its dependants stop and the run fails with this reason."""
