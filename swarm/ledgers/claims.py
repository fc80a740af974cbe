"""Claims, leases and completes: the SQL behind WorkerLedger.

A single claim or complete is a batch of one: every batch goes through the
group commit, whose groups share one transaction and settle each member
with the outcome it would get alone.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from swarm.errors import BackendError, Fenced
from swarm.ledger import (
    Claim,
    ClaimRequest,
    Completion,
    Message,
    MessageState,
    Refusal,
    RunStatus,
    WorkerLedger,
    body_digest,
)
from swarm.ledgers.core import MESSAGE_COLUMNS, SqlCore, batches, clip_error, marks, message_of, message_row
from swarm.ledgers.group import Group, K, Pending, R, SplitGroup


class ClaimSql(SqlCore, WorkerLedger):
    """A worker's leases on messages: taken, renewed, and ended done, released or rejected."""

    # A batch's claims share one transaction, as do its completes; a single
    # call is a batch of one. With group commit, so do those of concurrent
    # callers: fewer commits, each waiting for its log flush.
    group_commit = False
    group_limit = 64

    def __init__(self) -> None:
        self._claims = Group(self._claim_group, self.group_limit, shared=self.group_commit)
        self._completes = Group(self._complete_group, self.group_limit, shared=self.group_commit)

    # claims -----------------------------------------------------------------------

    def claim_batch(self, requests: Sequence[ClaimRequest], holder: str, lease: float) -> list[Claim | Exception]:
        settled = self._claims.submit_many((holder, lease), [(r.message.id, r) for r in requests])
        return [p.error or p.result for p in settled]

    def _claim_group(self, group: list[Pending[tuple[str, float], ClaimRequest]]) -> None:
        holder, lease = group[0].key
        now = self.now()
        until = now + lease  # the same in every run of the transaction: a claim knows its own lease by it
        self._run_group(group, lambda cur, requests: self._claim_many(cur, requests, holder, now, until))

    def _claim_many(self, cur: Any, requests: list[ClaimRequest], holder: str, now: float,
                    until: float) -> list[Claim]:
        """Claim distinct messages, each with the outcome it would get alone; nothing unknown is recorded.

        A claim never inserts: a message runs only if the master planned it
        or a parent recorded it, with this very body (its digest), in a run
        that is running. A refused claim changes nothing.
        """
        ids = sorted(r.message.id for r in requests)
        cur.execute(
            self._sql(
                "SELECT m.id, m.state, m.attempts, m.lease_until, m.digest, r.status, "
                "CASE WHEN m.holder = ? AND m.lease_until = ? THEN 1 ELSE 0 END "
                f"FROM swarm_messages m LEFT JOIN swarm_runs r ON r.id = m.run_id WHERE m.id IN ({marks(ids)})"
            ),
            (holder, until, *ids),
        )
        found = {row[0]: row[1:] for row in cur.fetchall()}
        refused: dict[str, Claim] = {}
        wanted = []
        for r in requests:
            verdict = _may_claim(found.get(r.message.id), r.message.body, now)
            if verdict is None:
                wanted.append(r.message.id)
            else:
                refused[r.message.id] = verdict
        granted = self._take_leases(cur, wanted, holder, now, until)
        return [refused.get(r.message.id) or granted[r.message.id] for r in requests]

    def _take_leases(self, cur: Any, ids: list[str], holder: str, now: float, until: float) -> dict[str, Claim]:
        """Lease the claimable ``ids``; each one's claim, granted unless a concurrent claim came first."""
        if not ids:
            return {}
        cur.execute(
            self._sql(
                "UPDATE swarm_messages SET state = ?, token = token + 1, attempts = attempts + 1, "
                f"holder = ?, lease_until = ?, updated_at = ? WHERE id IN ({marks(ids)}) "
                "AND (state IN (?, ?) OR (state = ? AND lease_until < ?))"
            ),
            (MessageState.CLAIMED, holder, until, now, *ids,
             MessageState.PLANNED, MessageState.QUEUED, MessageState.CLAIMED, now),
        )
        # Granted: claimed with this very holder and lease end, by the UPDATE above
        # or by an earlier run of this transaction whose COMMIT went unacknowledged.
        cur.execute(
            self._sql(
                "SELECT id, state, token, attempts, CASE WHEN holder = ? AND lease_until = ? THEN 1 ELSE 0 END "
                f"FROM swarm_messages WHERE id IN ({marks(ids)})"
            ),
            (holder, until, *ids),
        )
        return {row[0]: _claim(*row[1:]) for row in cur.fetchall()}

    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> set[str]:
        until = self.now() + lease
        held = sorted(set(leases))

        def work(cur: Any) -> set[str]:
            kept: set[str] = set()
            for part in batches(held, 500):
                ids = [msg_id for msg_id, _ in part]
                args = (*ids, *(v for pair in part for v in pair))
                where = f"state = ? AND id IN ({marks(ids)}) AND ({_id_token_pairs(len(part))})"
                cur.execute(self._sql(f"UPDATE swarm_messages SET lease_until = ? WHERE {where}"),
                            (until, MessageState.CLAIMED, *args))
                # Renewed: still claimed with that token, and now with this very lease end
                cur.execute(self._sql(f"SELECT id FROM swarm_messages WHERE lease_until = ? AND {where}"),
                            (until, MessageState.CLAIMED, *args))
                kept.update(row[0] for row in cur.fetchall())
            return kept

        return self._transaction(work) if held else set()

    # completes --------------------------------------------------------------------

    def complete_batch(self, completions: Sequence[Completion]) -> list[Exception | None]:
        return [p.error for p in self._completes.submit_many(None, [(c.message_id, c) for c in completions])]

    def _complete_group(self, group: list[Pending[None, Completion]]) -> None:
        now = self.now()
        self._run_group(group, lambda cur, completions: self._complete_many(cur, completions, now))

    def _complete_many(self, cur: Any, completions: list[Completion], now: float) -> list[Fenced | None]:
        """Complete distinct messages: ``Fenced`` for a stale token, else None; a repeated complete changes nothing."""
        ids = sorted(c.message_id for c in completions)
        cur.execute(
            self._sql(f"SELECT id, state, token FROM swarm_messages WHERE id IN ({marks(ids)}){self.lock_rows}"),
            ids,
        )
        found = {row[0]: (row[1], int(row[2])) for row in cur.fetchall()}
        outcomes: list[Fenced | None] = []
        ending = []
        for c in completions:
            state, current = found.get(c.message_id, (None, None))
            if current != c.token or state not in (MessageState.CLAIMED, MessageState.DONE):
                outcomes.append(Fenced(f"message {c.message_id}: lease token {c.token} is no longer current"))
            else:
                outcomes.append(None)
                # Else done with this token: an earlier run of this very call committed it all.
                if state == MessageState.CLAIMED:
                    ending.append(c)
        if ending:
            self._end_leases(cur, sorted(ending, key=lambda c: c.message_id), now)
        return outcomes

    def _end_leases(self, cur: Any, completions: list[Completion], now: float) -> None:
        """Mark done the claimed messages of ``completions``, locked and checked already, and record their results."""
        ids = [c.message_id for c in completions]
        cur.execute(
            self._sql(
                f"UPDATE swarm_messages SET state = ?, lease_until = NULL, updated_at = ? WHERE id IN ({marks(ids)}) "
                f"AND state = ? AND ({_id_token_pairs(len(completions))})"
            ),
            (MessageState.DONE, now, *ids, MessageState.CLAIMED,
             *(v for c in completions for v in (c.message_id, c.token))),
        )
        if cur.rowcount != len(completions):
            raise BackendError(
                f"{len(completions)} leases to end, {cur.rowcount} found: the rows changed under their locks")
        children: dict[str, tuple] = {}
        for c in completions:
            for kid in c.children:
                children.setdefault(kid.id, message_row(kid, c.run_id, c.phase, MessageState.QUEUED, now,
                                                         parent=c.message_id))
        counts = [(c.message_id, name, c.run_id, int(value)) for c in completions
                  for name, value in sorted(c.counts.items())]
        self._record_results(cur, [children[i] for i in sorted(children)], counts)

    def _record_results(self, cur: Any, child_rows: list[tuple], count_rows: list[tuple]) -> None:
        if child_rows:
            cur.executemany(self._sql(self._insert_new("swarm_messages", MESSAGE_COLUMNS)), child_rows)
        if count_rows:
            cur.executemany(
                self._sql(self._insert_new("swarm_counters", "message_id, name, run_id, value")), count_rows
            )

    # groups -----------------------------------------------------------------------

    def _run_group(self, group: list[Pending[K, R]], work: Callable[[Any, list[R]], list[Any]]) -> None:
        """Settle every member with ``work``'s outcome for it: together, or alone if it may spoil the group.

        ``work(cur, requests)`` returns one outcome per request, an exception
        where that request failed; a lone request is a group of one.
        """
        if len(group) == 1 or not self._run_together(group, work):
            for p in group:
                p.settle(functools.partial(self._alone, work, p.request))

    def _alone(self, work: Callable[[Any, list[R]], list[Any]], request: R) -> Any:
        """``work``'s outcome for one request, in a transaction of its own."""
        return self._transaction(lambda cur: work(cur, [request]))[0]

    def _run_together(self, group: list[Pending[K, R]], work: Callable[[Any, list[R]], list[Any]]) -> bool:
        """Settle every member from one transaction; False, settling none, if a member may have caused its failure."""
        try:
            outcomes = self._group_transaction(lambda cur: work(cur, [p.request for p in group]))
        except SplitGroup:
            return False
        except BackendError as exc:  # e.g. the database is down: each call fails as it would alone
            outcomes = [BackendError(str(exc)) for _ in group]
        for p, outcome in zip(group, outcomes, strict=True):
            p.resolve(outcome)
        return True

    # releases and rejects ----------------------------------------------------------

    def release(self, msg_id: str, token: int, state: MessageState, error: str | None, refund: bool = False) -> None:
        if state not in (MessageState.QUEUED, MessageState.DEAD, MessageState.ABORTED):
            raise ValueError(f"release to {state!r}: expected one of "
                             f"{MessageState.QUEUED}, {MessageState.DEAD}, {MessageState.ABORTED}")
        if refund and state != MessageState.QUEUED:
            raise ValueError("only a message going back to the queue gets its attempt back")
        now = self.now()
        self._transaction(lambda cur: self._end_lease(cur, msg_id, token, state, clip_error(error), now, refund))

    def _end_lease(self, cur: Any, msg_id: str, token: int, state: MessageState, error: str | None, now: float,
                   refund: bool) -> None:
        """Move the message held with ``token`` to ``state``, unless this was done already; ``Fenced`` if stale."""
        refund_sql = "attempts = attempts - 1, " if refund else ""
        cur.execute(
            self._sql(
                f"UPDATE swarm_messages SET state = ?, error = ?, {refund_sql}lease_until = NULL, updated_at = ? "
                "WHERE id = ? AND token = ? AND state = ?"
            ),
            (state, error, now, msg_id, token, MessageState.CLAIMED),
        )
        if cur.rowcount == 1:
            return
        # Nothing changes the token of a message after it leaves ``claimed`` with
        # it, so (state, token) says whether it was this holder who ended it.
        cur.execute(self._sql("SELECT state, token FROM swarm_messages WHERE id = ?"), (msg_id,))
        row = cur.fetchone()
        if row is None or row[0] != state or int(row[1]) != token:
            raise Fenced(f"message {msg_id}: lease token {token} is no longer current")

    def reject(self, msg_id: str, body: bytes, reason: str) -> bool:
        now = self.now()

        def work(cur: Any) -> bool:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, error = ?, token = token + 1, lease_until = NULL, "
                    "updated_at = ? WHERE id = ? AND state IN (?, ?) AND (digest = ? OR digest IS NULL)"
                ),
                (MessageState.DEAD, clip_error(reason), now, msg_id, MessageState.PLANNED, MessageState.QUEUED,
                 body_digest(bytes(body))),
            )
            return cur.rowcount == 1

        return self._transaction(work)

    def open_count(self, run_id: str, phase: str, limit: int | None = None) -> int:
        where = "run_id = ? AND state IN (?, ?, ?) AND phase = ?"
        args: tuple = (run_id, MessageState.PLANNED, MessageState.QUEUED, MessageState.CLAIMED, phase)
        if limit is None:
            row = self._row(f"SELECT COUNT(*) FROM swarm_messages WHERE {where}", args)
        else:  # stops at ``limit`` index entries, however many there are
            row = self._row(f"SELECT COUNT(*) FROM (SELECT 1 FROM swarm_messages WHERE {where} LIMIT ?) open_rows",
                            (*args, int(limit)))
        return 0 if row is None else int(row[0])

    def queued_children(self, parent_id: str) -> list[Message]:
        # A child shares its parent's run, phase and chunk, so it sorts under the
        # same id prefix: a range of the primary key, and no index on parent to
        # keep up on every child's insert (names cannot hold "/", so the range
        # "prefix/" .. "prefix0" holds exactly the ids that start with "prefix/").
        prefix = parent_id.rsplit("/", 2)[0]
        rows = self._rows(
            "SELECT id, stage, chunk, body FROM swarm_messages "
            "WHERE id > ? AND id < ? AND parent = ? AND state = ? ORDER BY id",
            (prefix + "/", prefix + "0", parent_id, MessageState.QUEUED),
        )
        return [message_of(r) for r in rows]


def _may_claim(row: Sequence[Any] | None, body: bytes, now: float) -> Claim | None:
    """None when the message in ``row`` may be leased for a delivery of ``body``; else the refusal."""
    if row is None:
        return Claim(None, 0, Refusal.UNPLANNED)
    state, attempts, lease_until, digest, run_status, ours = row
    if digest is not None and digest != body_digest(bytes(body)):
        return Claim(None, int(attempts), Refusal.MISMATCH)
    if state == MessageState.CLAIMED and int(ours):
        return None  # this very claim, committed by an earlier run of its transaction
    if MessageState(state).terminal:
        return Claim(None, int(attempts), MessageState(state))
    if run_status != RunStatus.RUNNING:
        return Claim(None, int(attempts), Refusal.RUN_ENDED, detail=run_status or "not in the ledger")
    if state == MessageState.CLAIMED and lease_until is not None and float(lease_until) >= now:
        return Claim(None, int(attempts), MessageState.CLAIMED)
    return None


def _claim(state: str, token: Any, attempts: Any, granted: Any) -> Claim:
    if granted and state == MessageState.CLAIMED:
        return Claim(token=int(token), attempts=int(attempts))
    return Claim(token=None, attempts=int(attempts), state=MessageState(state))


def _id_token_pairs(n: int) -> str:
    """Matches any of ``n`` (id, token) pairs; written out, as SQLite has no IN over a list of row values."""
    return " OR ".join(["(id = ? AND token = ?)"] * n)
