"""Reruns: the form, the dry run's preview with whatever holds the nights, and the start."""
from __future__ import annotations

import threading
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.console import views
from swarm.console.core import Pages, log_action
from swarm.console.guard import action_form
from swarm.context import source_of
from swarm.errors import ConfigError, PluginError
from swarm.ledger import RunStatus

DRY_RUNS_AT_ONCE = 2  # each is a process: a flood of previews waits for none, it is refused
DRY_RUNS = threading.BoundedSemaphore(DRY_RUNS_AT_ONCE)


class RerunPages(Pages):
    def routes(self) -> list[Route]:
        return [Route("/reruns", self.reruns), Route("/reruns/preview", self.preview),
                Route("/reruns/start", self.start_rerun, methods=["POST"])]

    def reruns(self, request: Request) -> Response:
        q = request.query_params
        fields = {k: q.get(k, "").strip() for k in ("job", "dates", "from_stage", "chunks", "params")}
        fields["force"] = "1" if q.get("force") else ""
        stages, error = self._stages(fields["job"])
        with self.backends.ledger() as ledger:
            jobs = ledger.jobs()
        return self.page(request, "reruns.html", section="reruns", fields=fields, jobs=jobs, stages=stages,
                         error=error, preview=None, holders=[], launched=self._launched())

    def preview(self, request: Request) -> Response:
        """The dry run of a rerun, and whatever holds its nights now: the start button only when nothing does."""
        q = request.query_params
        fields = {k: q.get(k, "").strip() for k in ("job", "dates", "from_stage", "chunks", "params")}
        fields["force"] = "1" if q.get("force") else ""
        stages, error = self._stages(fields["job"])
        holders: list[str] = []
        preview = None
        with self.backends.ledger() as ledger:
            jobs = ledger.jobs()
            if not error:
                try:
                    holders = self._holders(ledger, fields)
                    args = rerun_args(fields)
                except (ConfigError, PluginError) as exc:
                    error = str(exc)
        if not error:
            if not DRY_RUNS.acquire(blocking=False):
                raise HTTPException(429, f"{DRY_RUNS_AT_ONCE} dry runs are running already: try again in a moment")
            try:
                preview = self.launcher.run([*args, "--dry-run"])
            finally:
                DRY_RUNS.release()
        return self.page(request, "reruns.html", section="reruns", fields=fields, jobs=jobs, stages=stages,
                         error=error, preview=preview, holders=holders, launched=self._launched())

    async def start_rerun(self, request: Request) -> Response:
        form, actor = await action_form(request, self.guard)
        fields = {k: str(form.get(k, "")).strip() for k in ("job", "dates", "from_stage", "chunks", "params")}
        fields["force"] = "1" if form.get("force") else ""
        try:
            args = rerun_args(fields)
            with self.backends.ledger() as ledger:
                holders = self._holders(ledger, fields)
        except (ConfigError, PluginError) as exc:
            return self.page(request, "message.html", 400, section="reruns", title="Not started", text=str(exc))
        if holders:
            return self.page(request, "message.html", 409, section="reruns", title="Not started",
                             text="Each night can have one master at a time, and the console never overrides "
                                  "one: " + "; ".join(holders))
        started = self.launcher.start(args, f"rerun-{fields['job']}-{fields['from_stage']}")
        log_action(actor, f"started `swarm {' '.join(args)}`, pid {started.pid}")
        return self.page(request, "started.html", section="reruns", started=started, job=fields["job"])

    def _launched(self) -> list[dict[str, Any]]:
        return [{"argv": " ".join(x.started.argv), "pid": x.started.pid, "at": views.when(x.started.at),
                 "state": "running" if x.code is None else f"exited {x.code}", "tail": x.tail,
                 "log": x.started.log.name} for x in self.launcher.launched()]

    def _stages(self, job_name: str) -> tuple[list[str], str]:
        if not job_name:
            return [], ""
        try:
            return list(self.backends.job(job_name).stages), ""
        except (PluginError, ConfigError) as exc:
            return [], str(exc)

    def _holders(self, ledger: Any, fields: dict[str, str]) -> list[str]:
        """What holds the rerun's nights now: their running runs, and whoever holds their master lock."""
        from swarm.nights import dates_between, param_sets

        job = self.backends.job(fields["job"])
        params = dict(_pairs(fields["params"]))
        nights = {job.run_id(p) for p in param_sets(job, params, dates_between(fields["dates"]) if fields["dates"]
                                                     else ())}
        found = []
        for night in sorted(nights):
            holder = ledger.master_holder(night)
            if holder:
                found.append(f"{night} is held by {holder}")
        for run in ledger.runs(job.name, RunStatus.RUNNING, None, None, None, 1000):
            if source_of(run.id) in nights and not any(run.id in f for f in found):
                found.append(f"{run.id} is running (started {views.when(run.created_at)})")
        return found


def rerun_args(fields: dict[str, str]) -> list[str]:
    """``swarm rerun`` arguments from the rerun form's fields; ``ConfigError`` naming a missing one."""
    if not fields["job"]:
        raise ConfigError("choose a job")
    if not fields["from_stage"]:
        raise ConfigError("choose the stage to rerun from")
    if not fields["dates"] and not fields["params"]:
        raise ConfigError("give the dates (or the params) of the nights to rerun")
    args = ["rerun", fields["job"], "--from-stage", fields["from_stage"]]
    if fields["dates"]:
        args += ["--dates", fields["dates"]]
    for key, value in _pairs(fields["params"]):
        args += ["--param", f"{key}={value}"]
    if fields["chunks"]:
        args += ["--chunks", fields["chunks"]]
    if fields["force"]:
        args.append("--force")
    return args


def _pairs(text: str) -> list[tuple[str, str]]:
    """``k=v`` items, one a line or comma-separated."""
    items = [i.strip() for i in text.replace("\n", ",").split(",") if i.strip()]
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"param {item!r}: expected KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return out
