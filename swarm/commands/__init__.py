"""The ``swarm`` command's subcommands: one module a group, each a ``register(sub)`` function.

``register`` adds its subparsers to ``sub`` and sets ``func(args, cfg) ->
exit code`` on each. Swarm's own groups are listed here; the master's and
the worker's (``master.commands``, ``workers.commands``) and the HBase
development server's come from the ``swarm.commands`` entry points, so that
the library never imports the applications built on it.
"""
from __future__ import annotations

import argparse
import importlib
from importlib import metadata
from typing import Callable

from swarm.errors import PluginError

GROUP = "swarm.commands"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# In the order `swarm --help` lists them: a job author's first, then an operator's.
OWN = (
    "swarm.commands.new_job",
    "swarm.commands.run",
    "swarm.commands.tables",
    "swarm.commands.history",
    "swarm.commands.results",
    "swarm.commands.dlq",
    "swarm.commands.db",
    "swarm.commands.config",
    "swarm.commands.fleet",
    "swarm.commands.ctl",
    "swarm.commands.ui",
)


def providers() -> list[tuple[str, Register]]:
    """``(where from, register)`` of every group: Swarm's own, then the entry points'."""
    found: list[tuple[str, Register]] = [(name, importlib.import_module(name).register) for name in OWN]
    for ep in metadata.entry_points(group=GROUP):
        try:
            found.append((f"{GROUP} entry point {ep.name!r}", ep.load()))
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise PluginError(f"cannot load the {GROUP} entry point {ep.name!r} ({ep.value}): "
                              f"{type(exc).__name__}: {exc}") from exc
    return found


def register_all(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Every group's subcommands on ``sub``; two groups that name the same command are an error."""
    for origin, register in providers():
        try:
            register(sub)
        except argparse.ArgumentError as exc:
            raise PluginError(f"{origin}: {exc}") from None
