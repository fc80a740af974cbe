"""The master and the worker, as the library finds them: through the ``swarm.roles`` entry points.

``swarm`` is the library; the master (``master/``) and the worker process
(``workers/``) are built on it and register themselves in setup.cfg. Code in
the library that runs them in-process (``swarm.local``, ``swarm.testing``)
asks here, so that the library never imports its applications.
"""
from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from swarm.errors import PluginError

GROUP = "swarm.roles"


@functools.cache
def role(name: str) -> Any:
    """The object registered as ``name`` in the ``swarm.roles`` group (``master``, ``master_settings``, ``worker``)."""
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == name:
            return ep.load()
    raise PluginError(f"no {name!r} in the {GROUP!r} entry points: install Swarm (`pip install -e .`) so that "
                      "its master and worker are registered")
