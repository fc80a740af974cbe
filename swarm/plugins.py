"""Finding jobs: the ``swarm.jobs`` entry-point group, or a module path from config."""
from __future__ import annotations

import importlib
import sys
import traceback
from importlib import metadata
from types import ModuleType
from typing import Iterable

from swarm.errors import PluginError, describe
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
    raise PluginError(f"no job named {name!r}; known jobs: {', '.join(known) or 'none'} (a job's module must be "
                      f"listed in jobs.modules, or its package declare a {GROUP!r} entry point)")


def _from_module(path: str) -> Job:
    module_name, _, attr = path.partition(":")
    module = _import(module_name)
    obj = getattr(module, attr or "job", None)
    if obj is None:
        raise PluginError(f"job module {module_name!r} has no attribute {attr or 'job'!r}")
    return _checked(obj, path)


def _import(module_name: str) -> ModuleType:
    """The module, or a ``PluginError`` that tells a module not on the path from one that fails inside."""
    if not module_name or "/" in module_name or module_name.endswith(".py"):
        raise PluginError(f"job module {module_name!r}: give a module's name as Python imports it ('url_daily' "
                          f"for url_daily.py, 'mycompany.jobs.clicks'), not a file path")
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise PluginError(_not_on_path(module_name, missing)) from None
        # An error inside the module, even a missing module it imports, is not a path problem: show it as it is.
        raise PluginError(f"job module {module_name!r} was found, but importing it failed: {_where(exc)}") from None


def _not_on_path(module_name: str, missing: str) -> str:
    what = "it is" if missing == module_name else f"its package {missing!r} is"
    return (f"cannot import job module {module_name!r}: {what} not on the Python path. The module must be "
            f"importable: install its package (`pip install -e .` in the project that holds it), or set "
            f"PYTHONPATH to the directory that holds it (`PYTHONPATH=. swarm ...` from there: the `swarm` command "
            f"does not look in the current directory); and jobs.modules (or SWARM_JOBS_MODULES) must list it "
            f"by that name")


def _where(exc: BaseException) -> str:
    """``Type: message`` and the last line of the module's code it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(frames) if "importlib" not in f.filename), None)
    at = f" (at {frame.filename}, line {frame.lineno})" if frame and not isinstance(exc, SyntaxError) else ""
    return describe(exc) + at


def _checked(obj: object, where: str) -> Job:
    if not isinstance(obj, Job):
        raise PluginError(f"{where} is a {type(obj).__name__}, not a swarm.Job")
    obj.verify()
    return obj
