"""The nights a command names: ``--dates`` as days, and one param set per day."""
from __future__ import annotations

import datetime
from typing import Mapping, Sequence

from swarm.errors import ConfigError
from swarm.stage import Job


def dates_between(spec: str) -> list[str]:
    """``2026-11-01..2026-11-03`` or ``2026-11-01,2026-11-05`` -> the listed days, in order."""
    days: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        first, _, last = part.partition("..")
        try:
            start = datetime.date.fromisoformat(first)
            end = datetime.date.fromisoformat(last) if last else start
        except ValueError:
            raise ConfigError(f"--dates {spec!r}: expected YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD or a list") from None
        if end < start:
            raise ConfigError(f"--dates {part!r}: the range ends before it starts")
        days += [(start + datetime.timedelta(d)).isoformat() for d in range((end - start).days + 1)]
    return days


def param_sets(job: Job, params: Mapping[str, str], dates: Sequence[str] = ()) -> list[dict[str, str]]:
    """One param set per date (``date`` set to each), or ``params`` alone; each checked against the job's."""
    sets = [{**params, "date": d} for d in dates] if dates else [dict(params)]
    for s in sets:
        job.run_id(s)  # PluginError naming a missing or unexpected param
    return sets
