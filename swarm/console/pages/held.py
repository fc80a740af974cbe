"""Held runs: their checks, and publishing or rejecting each with a reason."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.console import views
from swarm.console.core import RUNS_SHOWN, Pages, log_action, quote
from swarm.console.guard import action_form
from swarm.errors import SwarmError
from swarm.ledger import RunStatus


class HeldPages(Pages):
    def routes(self) -> list[Route]:
        return [Route("/held", self.held), Route("/held/decide", self.decide, methods=["POST"])]

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
            log_action(actor, f"started `swarm publish {run_id}`, pid {started.pid}")
            return self.redirect(request, f"/run?id={quote(run_id)}")
        try:
            with self.backends.ledger() as ledger:
                await run_in_threadpool(reject_held, run_id, reason, ledger, actor.holder())
        except SwarmError as exc:
            return self.page(request, "message.html", 409, section="held", title="Not rejected", text=str(exc))
        log_action(actor, f"rejected {run_id}")
        return self.redirect(request, f"/run?id={quote(run_id)}")
