"""The console's Starlette application: pages that read the ledger, and actions that go through ``guard``.

Pages are server-rendered Jinja2 templates (every value escaped); the
parts of a running run's page that move are re-read by htmx every few
seconds, and its throughput plot by the console's own script. Reads open
the ledger (and the broker, for queue depths) per request; actions start
the same ``swarm`` commands an operator would type (``launch``), or call
the library functions behind them.
"""
from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from swarm.config import Config
from swarm.console import fleet, views
from swarm.console.auth import Guard
from swarm.console.guard import READ_ONLY, Actor, SecurityHeaders, action_form, csrf_token, logged_in, login_form
from swarm.console.launch import Launcher
from swarm.context import source_of
from swarm.errors import ConfigError, PluginError, SwarmError
from swarm.ledger import RunStatus
from swarm.urls import redact

HERE = Path(__file__).parent
REFRESH_SECONDS = 2  # how often a running run's page re-reads its live part
RUNS_SHOWN = 100
DRY_RUNS_AT_ONCE = 2  # each is a process: a flood of previews waits for none, it is refused
DRY_RUNS = threading.BoundedSemaphore(DRY_RUNS_AT_ONCE)
NAV = (("runs", "Runs"), ("dead-letters", "Dead letters"), ("reruns", "Reruns"), ("held", "Held runs"),
       ("fleet", "Fleet"))


@dataclass(frozen=True)
class Backends:
    """How a request opens what it reads: the ledger, the broker (None: in process), a job, the tables.

    ``swarm ui`` passes the ``swarm`` command's own openers, so the console
    sees exactly the backends and jobs every other command of the site sees.
    """

    open_ledger: Callable[[], Any]
    open_broker: Callable[[], Any]
    job: Callable[[str], Any]
    tables: Callable[[], Any]
    in_process: bool

    @contextlib.contextmanager
    def ledger(self) -> Iterator[Any]:
        ledger = self.open_ledger()
        try:
            yield ledger
        finally:
            ledger.close()

    @contextlib.contextmanager
    def broker(self) -> Iterator[Any]:
        """The broker, or None for the in-process one (its queues live in another process, if any)."""
        if self.in_process:
            yield None
            return
        broker = self.open_broker()
        try:
            yield broker
        finally:
            broker.close()


class Console:
    """The routes and what they need: config, backends, who may act, and the launcher of commands."""

    def __init__(self, cfg: Config, guard: Guard, backends: Backends, launcher: Launcher | None = None):
        self.cfg, self.guard = cfg, guard
        self.settings = cfg["console"]
        self.backends = backends
        self.launcher = launcher or Launcher(cfg)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined)
        env.filters["url"] = _quote
        self.env = env

    # rendering -----------------------------------------------------------------------

    def page(self, request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        context = {"base": base, "user": logged_in(request), "writable": self.guard.writable,
                   "csrf": csrf_token(request), "nav": NAV, "refresh": REFRESH_SECONDS, "read_only": READ_ONLY,
                   "section": values.pop("section", ""), **values}
        return HTMLResponse(self.env.get_template(template).render(context), status_code=code)

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + path, status_code=303)

    # runs ----------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("job", "status", "since", "until", "text")}
        error, rows, jobs = "", [], []
        with self.backends.ledger() as ledger:
            jobs = ledger.jobs()
            try:
                status = RunStatus(filters["status"]) if filters["status"] else None
                found = ledger.runs(filters["job"] or None, status, _day(filters["since"], "since"),
                                    _day(filters["until"], "until"), filters["text"] or None, RUNS_SHOWN)
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
        _log_action(actor, f"started `swarm {command}` for {run.id}, pid {started.pid}")
        return self.redirect(request, f"/run?id={_quote(run.id)}")

    # dead letters --------------------------------------------------------------------

    def dead_letters(self, request: Request) -> Response:
        show_replayed = request.query_params.get("replayed") == "1"
        with self.backends.ledger() as ledger:
            notes = self._gather(ledger)
            letters = ledger.dead_letters(replayed=show_replayed)
        rows = [{"id": d.id, "queue": d.queue, "message": d.message_id or "(undecodable)",
                 "when": views.when(d.created_at), "reason": views.first_line(d.reason, 200),
                 "replayed": views.when(d.replayed_at)} for d in letters]
        return self.page(request, "dead_letters.html", section="dead-letters", rows=rows, notes=notes,
                         show_replayed=show_replayed)

    def _gather(self, ledger: Any) -> list[str]:
        """Dead letters from the broker's dead-letter queues into the ledger, as ``swarm dlq list`` does."""
        from swarm import dlq

        notes: list[str] = []
        try:
            with self.backends.broker() as broker:
                if broker is None:
                    return notes
                for name in ledger.jobs():
                    try:
                        dlq.collect(broker, ledger, self.backends.job(name))
                    except (PluginError, ConfigError) as exc:
                        notes.append(f"not gathering the dead letters of job {name}: cannot load it ({exc})")
        except SwarmError as exc:
            notes.append(f"cannot gather dead letters from the broker ({redact(str(exc))}); listing those the "
                         f"ledger has")
        return notes

    def dead_letter(self, request: Request) -> Response:
        dl_id = _int(request.query_params.get("id", ""), "id")
        with self.backends.ledger() as ledger:
            record = ledger.get_dead_letter(dl_id)
            if record is None:
                raise HTTPException(404, f"no dead letter {dl_id}")
            view = views.dead_letter_view(record, ledger)
        return self.page(request, "dead_letter.html", section="dead-letters", **view)

    async def replay(self, request: Request) -> Response:
        """Replay the chosen dead letters (or all): first a confirmation page, then the replay."""
        form, actor = await action_form(request, self.guard)
        with self.backends.ledger() as ledger:
            if form.get("all"):
                ids = [d.id for d in ledger.dead_letters()]
            else:
                ids = [_int(str(v), "id") for v in form.getlist("id")]
            records = [r for r in (ledger.get_dead_letter(i) for i in ids) if r is not None]
        if not records:
            return self.page(request, "message.html", 400, section="dead-letters", title="Nothing to replay",
                             text="No dead letter was chosen, or those chosen are gone.")
        if form.get("confirm") != "yes":
            return self.page(request, "replay_confirm.html", section="dead-letters", records=records,
                             all=bool(form.get("all")))
        replayed, runs = await run_in_threadpool(self._replay, [r.id for r in records])
        _log_action(actor, f"replayed dead letter(s) {', '.join(str(r.id) for r in records)}")
        return self.page(request, "replayed.html", section="dead-letters", count=replayed, runs=runs)

    def _replay(self, ids: list[int]) -> tuple[int, list[dict[str, Any]]]:
        from swarm import dlq
        from swarm.envelope import peek

        with self.backends.ledger() as ledger, self.backends.broker() as broker:
            records = [ledger.get_dead_letter(i) for i in ids]
            count = dlq.replay(broker if broker is not None else _NoBroker(), ledger, ids)  # type: ignore[arg-type]
            run_ids = sorted({env.run for env in (peek(r.body) for r in records if r) if env is not None})
            runs = []
            for run_id in run_ids:
                run = ledger.get_run(run_id)
                if run is not None:
                    runs.append({"id": run.id, "status": str(run.status),
                                 "holder": ledger.master_holder(source_of(run.id)),
                                 "resumable": run.status != RunStatus.RUNNING or not ledger.master_holder(
                                     source_of(run.id))})
        return count, runs

    # reruns --------------------------------------------------------------------------

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
        _log_action(actor, f"started `swarm {' '.join(args)}`, pid {started.pid}")
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

    # held runs -----------------------------------------------------------------------

    def held(self, request: Request) -> Response:
        with self.backends.ledger() as ledger:
            runs = ledger.runs(None, RunStatus.HELD, None, None, None, RUNS_SHOWN)
            rows = [{"run": r, "started": views.when(r.created_at), "checks": ledger.checks(r.id)} for r in runs]
        return self.page(request, "held.html", section="held", rows=rows)

    async def decide(self, request: Request) -> Response:
        """Publish or reject a held run, with a reason: publishing runs as ``swarm publish`` in the background."""
        from swarm.publishing import reject_held

        form, actor = await action_form(request, self.guard)
        run_id, action = str(form.get("id", "")), str(form.get("action", ""))
        reason = str(form.get("reason", "")).strip()
        if action not in ("publish", "reject") or not reason:
            return self.page(request, "message.html", 400, section="held", title="Nothing decided",
                             text="Choose publish or reject, and give the reason: it is kept with the run.")
        reason = f"{reason} (by {actor.name}, in the console)"
        if action == "publish":
            started = self.launcher.start(["publish", run_id, "--reason", reason], f"publish-{run_id}")
            _log_action(actor, f"started `swarm publish {run_id}`, pid {started.pid}")
            return self.redirect(request, f"/run?id={_quote(run_id)}")
        try:
            with self.backends.ledger() as ledger:
                await run_in_threadpool(reject_held, run_id, reason, ledger, actor.holder())
        except SwarmError as exc:
            return self.page(request, "message.html", 409, section="held", title="Not rejected", text=str(exc))
        _log_action(actor, f"rejected {run_id}")
        return self.redirect(request, f"/run?id={_quote(run_id)}")

    # fleet ---------------------------------------------------------------------------

    def fleet_page(self, request: Request) -> Response:
        from swarm.fleetcontrol import describe_line, summary

        hosts = fleet.hosts(list(self.settings["supervisors"]))
        pools = fleet.pools(list(self.settings["metrics"]))
        with self.backends.ledger() as ledger:
            controls = [(job, describe_line(summary(ledger, job))) for job in ledger.jobs()]
        return self.page(request, "fleet.html", section="fleet", hosts=hosts, pools=pools,
                         controls=[c for c in controls if c[1]])

    # login ---------------------------------------------------------------------------

    def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", error="")

    async def login(self, request: Request) -> Response:
        form = await login_form(request)
        if not self.guard.writable:
            return self.page(request, "login.html", 403, error=READ_ONLY)
        name, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
        who = await run_in_threadpool(self.guard.login, name, password)
        if who is None:
            return self.page(request, "login.html", 403, error="Wrong user name, password or token.")
        request.session.clear()  # a new session: no one can fix a session id before the login
        request.session["user"] = who
        request.session["csrf"] = secrets.token_urlsafe(32)
        return self.redirect(request, "/runs")

    async def logout(self, request: Request) -> Response:
        await login_form(request)
        request.session.clear()
        return self.redirect(request, "/runs")

    def routes(self) -> list[Any]:
        return [
            Route("/", lambda r: self.redirect(r, "/runs")),
            Route("/runs", self.runs),
            Route("/run", self.run),
            Route("/run/live", self.run_live),
            Route("/run/series", self.run_series),
            Route("/run/resume", self.resume, methods=["POST"]),
            Route("/dead-letters", self.dead_letters),
            Route("/dead-letter", self.dead_letter),
            Route("/dead-letters/replay", self.replay, methods=["POST"]),
            Route("/reruns", self.reruns),
            Route("/reruns/preview", self.preview),
            Route("/reruns/start", self.start_rerun, methods=["POST"]),
            Route("/held", self.held),
            Route("/held/decide", self.decide, methods=["POST"]),
            Route("/fleet", self.fleet_page),
            Route("/login", self.login_page),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/healthz", lambda r: Response("ok\n", media_type="text/plain")),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


# Routes that change something; tests/unit/console posts to each without a login, a token or a CSRF token.
ACTIONS = ("/run/resume", "/dead-letters/replay", "/reruns/start", "/held/decide")


def build(cfg: Config, guard: Guard, session_key: str, backends: Backends,
          launcher: Launcher | None = None) -> Starlette:
    """The console's ASGI application."""
    console = Console(cfg, guard, backends, launcher)
    settings = cfg["console"]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=session_key, session_cookie="swarm_console",
                   max_age=int(float(settings["session_hours"]) * 3600), same_site="strict",
                   https_only=bool(settings["secure_cookies"])),
    ]
    app = Starlette(routes=console.routes(), middleware=middleware,
                    exception_handlers={HTTPException: _error_page(console)})
    app.state.console = console
    return app


def _error_page(console: Console) -> Callable[[Request, Exception], Any]:
    def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = {403: "Refused", 404: "Not found", 413: "Too large", 429: "Busy"}.get(exc.status_code, "Error")
        return console.page(request, "message.html", exc.status_code, title=title, text=str(exc.detail))
    return handle


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


def _day(text: str, name: str) -> float | None:
    """A ``YYYY-MM-DD`` filter as a local timestamp; None for none."""
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ConfigError(f"{name}: expected a date YYYY-MM-DD, got {text!r}") from None


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a number, got {text[:40]!r}") from None


def _quote(value: Any) -> str:
    import urllib.parse

    return urllib.parse.quote(str(value), safe="")


class _NoBroker:
    """The in-process broker's stand-in for a replay: nothing outlives this process, so nothing is published."""

    outlives_process = False


def _log_action(actor: Actor, what: str) -> None:
    import logging

    logging.getLogger("swarm.console").info("%s on %s: %s", actor.name, socket.gethostname(), what)
