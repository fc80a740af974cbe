"""The exit codes of the ``swarm`` command: one meaning each, for the scripts that act on them."""
from __future__ import annotations

from swarm.errors import (
    BackendError,
    BackendRefused,
    ConfigError,
    MasterLocked,
    PluginError,
    PublishRefused,
    RerunLocked,
    RerunRefused,
    SwarmError,
    TableError,
)

EXIT_OK = 0  # done
EXIT_FAILED = 1  # the run failed
EXIT_USAGE = 2  # bad arguments or config
EXIT_LOCKED = 3  # another master holds the run
EXIT_HELD = 5  # the run finished, but a check failed: its result is held, unpublished
EXIT_SOFTWARE = 70  # an unexpected error, a bug in a job or in Swarm (sysexits' EX_SOFTWARE); not a failed run
EXIT_UNAVAILABLE = 75  # a backend stayed unreachable (sysexits' EX_TEMPFAIL): try again later
EXIT_INTERRUPTED = 130  # Ctrl-C


def exit_for(exc: SwarmError) -> tuple[int, str]:
    """The exit code of an error, and what to say before its message."""
    if isinstance(exc, RerunRefused):
        return (EXIT_LOCKED if isinstance(exc, RerunLocked) else EXIT_USAGE), "rerun refused: "
    if isinstance(exc, PublishRefused):
        return EXIT_USAGE, "refused: "
    if isinstance(exc, MasterLocked):
        return EXIT_LOCKED, ""
    if isinstance(exc, (ConfigError, PluginError, TableError, BackendRefused)):
        return EXIT_USAGE, ""
    if isinstance(exc, BackendError):
        return EXIT_UNAVAILABLE, ""
    return EXIT_SOFTWARE, ""
