"""Dead letters: gathered from the broker, listed, shown decoded, and replayed after a confirmation."""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.console import views
from swarm.console.core import Pages, log_action, number
from swarm.console.guard import action_form
from swarm.context import source_of
from swarm.errors import SwarmError
from swarm.ledger import RunStatus
from swarm.urls import redact


class DeadLetterPages(Pages):
    def routes(self) -> list[Route]:
        return [Route("/dead-letters", self.dead_letters), Route("/dead-letter", self.dead_letter),
                Route("/dead-letters/replay", self.replay, methods=["POST"])]

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
                if broker is not None:
                    dlq.collect_every_job(broker, ledger, self.backends.job, notes.append)
        except SwarmError as exc:
            notes.append(f"cannot gather dead letters from the broker ({redact(str(exc))}); listing those the "
                         f"ledger has")
        return notes

    def dead_letter(self, request: Request) -> Response:
        dl_id = number(request.query_params.get("id", ""), "id")
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
                ids = [number(str(v), "id") for v in form.getlist("id")]
            records = [r for r in (ledger.get_dead_letter(i) for i in ids) if r is not None]
        if not records:
            return self.page(request, "message.html", 400, section="dead-letters", title="Nothing to replay",
                             text="No dead letter was chosen, or those chosen are gone.")
        if form.get("confirm") != "yes":
            return self.page(request, "replay_confirm.html", section="dead-letters", records=records,
                             all=bool(form.get("all")))
        replayed, runs = await run_in_threadpool(self._replay, [r.id for r in records])
        log_action(actor, f"replayed dead letter(s) {', '.join(str(r.id) for r in records)}")
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


class _NoBroker:
    """The in-process broker's stand-in for a replay: nothing outlives this process, so nothing is published."""

    outlives_process = False
