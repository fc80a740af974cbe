"""The runs, and one run: live while it works, with its throughput plot; resuming a run's master."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swarm.console import views
from swarm.console.core import RUNS_SHOWN, Pages, log_action, quote
from swarm.console.guard import action_form
from swarm.context import source_of
from swarm.errors import ConfigError, PluginError, SwarmError
from swarm.ledger import RunStatus


class RunPages(Pages):
    def routes(self) -> list[Route]:
        return [Route("/runs", self.runs), Route("/run", self.run), Route("/run/live", self.run_live),
                Route("/run/series", self.run_series), Route("/run/resume", self.resume, methods=["POST"])]

    def runs(self, request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("job", "status", "since", "until", "text")}
        error, rows, jobs = "", [], []
        with self.backends.ledger() as ledger:
            jobs = ledger.jobs()
            try:
                status = RunStatus(filters["status"]) if filters["status"] else None
                found = ledger.runs(filters["job"] or None, status, day(filters["since"], "since"),
                                    day(filters["until"], "until"), filters["text"] or None, RUNS_SHOWN)
                rows = [views.run_row(r, ledger) for r in found]
            except (ValueError, ConfigError) as exc:
                error = str(exc)
        return self.page(request, "runs.html", section="runs", rows=rows, jobs=jobs, filters=filters,
                         statuses=[s.value for s in RunStatus], error=error, shown=RUNS_SHOWN)

    def run(self, request: Request) -> Response:
        run_id = request.query_params.get("id", "")
        with self.backends.ledger() as ledger:
            detail = self._live(ledger, run_id)
            holder = ledger.master_holder(source_of(run_id))
        return self.page(request, "run.html", section="runs", holder=holder, **detail)

    def run_live(self, request: Request) -> Response:
        """The moving part of a run's page, for htmx to swap in."""
        with self.backends.ledger() as ledger:
            detail = self._live(ledger, request.query_params.get("id", ""))
        return self.page(request, "run_live.html", **detail)

    def _live(self, ledger: Any, run_id: str) -> dict[str, Any]:
        run = ledger.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        detail = views.run_detail(run, ledger)
        queues = self._queues(run.job)
        with self._depth() as depth:
            detail["stages"] = views.stage_rows(run, ledger, queues, depth)
        detail["states"] = views.STATES
        return detail

    def _queues(self, job_name: str) -> dict[str, str] | None:
        from swarm.broker import stage_queue

        try:
            job = self.backends.job(job_name)
        except (PluginError, ConfigError):
            return None  # a job this console cannot load: what the ledger knows still shows
        return {s: stage_queue(job.name, s) for s in job.stages}

    @contextlib.contextmanager
    def _depth(self) -> Iterator[Callable[[str], int] | None]:
        with contextlib.ExitStack() as stack:
            try:
                broker = stack.enter_context(self.backends.broker())
            except SwarmError:
                broker = None  # the broker is down: depths show as unknown
            yield None if broker is None else broker.depth

    def run_series(self, request: Request) -> Response:
        run_id = request.query_params.get("id", "")
        with self.backends.ledger() as ledger:
            run = ledger.get_run(run_id)
            if run is None:
                raise HTTPException(404, f"no run {run_id!r}")
            data = views.throughput(run, ledger)
        return JSONResponse({**data, "running": run.status == RunStatus.RUNNING})

    async def resume(self, request: Request) -> Response:
        """Start the master of a run again (after a replay, say): ``swarm master`` (``swarm run`` in process)."""
        form, actor = await action_form(request, self.guard)
        run_id = str(form.get("id", ""))
        with self.backends.ledger() as ledger:
            run = ledger.get_run(run_id)
            if run is None:
                raise HTTPException(404, f"no run {run_id!r}")
            holder = ledger.master_holder(source_of(run.id))
        if holder:
            return self.page(request, "message.html", 409, title="Not started",
                             text=f"{run.id} is held by {holder}; the console never overrides a running master.")
        command = "run" if self.backends.in_process else "master"
        params = [a for k, v in sorted(run.params.items()) for a in ("--param", f"{k}={v}")]
        started = self.launcher.start([command, run.job, *params], f"{command}-{run.id}")
        log_action(actor, f"started `swarm {command}` for {run.id}, pid {started.pid}")
        return self.redirect(request, f"/run?id={quote(run.id)}")


def day(text: str, name: str) -> float | None:
    """A ``YYYY-MM-DD`` filter as a local timestamp; None for none."""
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ConfigError(f"{name}: expected a date YYYY-MM-DD, got {text!r}") from None
