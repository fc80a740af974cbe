"""Finding jobs: the ``swarm.jobs`` entry-point group, or a module path from config."""
from __future__ import annotations

import importlib
import sys
from importlib import metadata
from typing import Iterable

from swarm.errors import PluginError
from swarm.stage import Job

GROUP = "swarm.jobs"


def load_job(name: str, modules: Iterable[str] = (), path: Iterable[str] = ()) -> Job:
    """The job called ``name``, from a config module, an entry point, or ``module[:attr]``.

    ``path``: directories to look in for the modules first (``jobs.path``).
    """
    for directory in reversed(list(path)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    for module in modules:
        job = _from_module(module)
        if job.name == name:
            return job
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == name:
            return _checked(ep.load(), ep.value)
    if "." in name or ":" in name:
        return _from_module(name)
    known = sorted({ep.name for ep in metadata.entry_points(group=GROUP)} | {_from_module(m).name for m in modules})
    raise PluginError(f"no job named {name!r}; known jobs: {', '.join(known) or 'none'}")


def _from_module(path: str) -> Job:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import job module {module_name!r}: {exc}") from None
    obj = getattr(module, attr or "job", None)
    if obj is None:
        raise PluginError(f"job module {module_name!r} has no attribute {attr or 'job'!r}")
    return _checked(obj, path)


def _checked(obj: object, where: str) -> Job:
    if not isinstance(obj, Job):
        raise PluginError(f"{where} is a {type(obj).__name__}, not a swarm.Job")
    obj.check()
    return obj
