"""Group commit: requests that arrive while a transaction runs share the next one, each with its own outcome."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

from swarm.errors import BackendError

K = TypeVar("K", bound=Hashable)  # what requests share a transaction by
R = TypeVar("R")  # a request in a group commit


class SplitGroup(Exception):
    """A grouped transaction failed in a way that one member alone may have caused."""


@dataclasses.dataclass(eq=False)
class Pending(Generic[K, R]):
    """One caller's request in a group commit, and then its outcome."""

    key: K  # only requests with equal keys share a transaction
    id: str  # and never two for the same message
    request: R
    result: Any = None
    error: Exception | None = None
    settled: bool = False

    def succeed(self, result: Any) -> None:
        self.result, self.settled = result, True

    def fail(self, error: Exception) -> None:
        self.error, self.settled = error, True

    def resolve(self, outcome: Any) -> None:
        """Settle with ``outcome``: an exception is this member's error, anything else its result."""
        if isinstance(outcome, Exception):
            self.fail(outcome)
        else:
            self.succeed(outcome)

    def settle(self, action: Callable[[], Any]) -> None:
        """Settle with the outcome ``action()`` returns, or the exception it raises."""
        try:
            outcome = action()
        except Exception as exc:  # noqa: BLE001 - it is this member's outcome, raised in its own thread
            self.fail(exc)
        else:
            self.resolve(outcome)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Group(Generic[K, R]):
    """Group commit: callers that arrive while a transaction runs share the next one.

    No thread of its own and no waiting for company: a caller that finds no
    transaction running leads one for every waiting request that fits (its
    own included, in arrival order), so a lone caller goes straight through.
    ``run`` settles every member of the group it is given.

    ``shared=False``: a caller's requests share transactions only with each
    other, in its own thread, whatever other threads do.
    """

    def __init__(self, run: Callable[[list[Pending[K, R]]], None], limit: int = 64, shared: bool = True):
        self._run, self._limit, self._shared = run, limit, shared
        self._cond = threading.Condition()
        self._waiting: list[Pending[K, R]] = []
        self._busy = False

    def submit(self, key: K, id_: str, request: R) -> Any:
        """Wait for this request's outcome: its result, or its exception raised here."""
        return self.submit_many(key, [(id_, request)])[0].outcome()

    def submit_many(self, key: K, requests: Sequence[tuple[str, R]]) -> list[Pending[K, R]]:
        """Queue several ``(id, request)`` at once and wait until every one is settled."""
        mine = [Pending(key, id_, request) for id_, request in requests]
        if self._shared:
            self._share(mine)
        else:
            waiting = mine
            while waiting:
                group, waiting = _take(waiting, self._limit)
                self._run(group)
        return mine

    def _share(self, mine: list[Pending[K, R]]) -> None:
        with self._cond:
            self._waiting.extend(mine)
        while True:
            with self._cond:
                while self._busy and not all(p.settled for p in mine):
                    self._cond.wait()
                if all(p.settled for p in mine):
                    return
                self._busy = True
                group = self._take()
            self._lead(group)

    def _take(self) -> list[Pending[K, R]]:
        group, self._waiting = _take(self._waiting, self._limit)
        return group

    def _lead(self, group: list[Pending[K, R]]) -> None:
        try:
            self._run(group)
        finally:
            for p in group:
                if not p.settled:  # the leader was interrupted
                    p.fail(BackendError("the ledger transaction was interrupted"))
            with self._cond:
                self._busy = False
                self._cond.notify_all()


def _take(waiting: list[Pending[K, R]], limit: int) -> tuple[list[Pending[K, R]], list[Pending[K, R]]]:
    """The oldest request and those after it that can share its transaction; and the rest, still waiting."""
    first = waiting[0]
    group: list[Pending[K, R]] = []
    rest: list[Pending[K, R]] = []
    ids: set[str] = set()
    for p in waiting:
        if len(group) < limit and p.key == first.key and p.id not in ids:
            group.append(p)
            ids.add(p.id)
        else:
            rest.append(p)  # a second request for a message waits for the first one's outcome
    return group, rest
