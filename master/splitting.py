"""Straggler splitting from the master's watch loop: a range message still waiting, never claimed, in a phase's tail.

What splitting is, and the worker's half of it, is in ``swarm.slices``. A
worker splits the rest a slice hands on; what no worker reaches is a range
message that waits while other threads sit idle (in the prefetch of a worker
whose threads are all busy, or left on no queue). On each look at a phase
down to its tail (at most ``split.tail`` open messages), for each splittable
stage whose queue is empty, the master takes the stage's messages that are
queued and were never claimed, and for each range worth splitting:

1. records it done with its parts as its children (queued), in one ledger
   transaction that changes nothing unless the message is still queued and
   was never claimed: a message a worker holds, or ever held, is never
   split, since that worker may have written part of its work;
2. publishes the parts.

Killed between the two (failpoint ``master.after_split``), the parts are
queued in the ledger and on no queue: the master started again re-publishes
them as lost work (``master.lost_after``), as it does any queued message
missing from an empty queue. A worker that receives the original later finds
it done, skips it, and publishes again those of its parts still queued,
which is harmless: each is claimed once.
"""
from __future__ import annotations

import logging
from typing import Mapping

from swarm.broker import Broker, stage_queue
from swarm.envelope import decode
from swarm.errors import BadMessage, TableError, describe
from swarm.failpoints import failpoint
from swarm.ledger import MasterLedger, Message, MessageState
from swarm.signing import SiteKeys
from swarm.slices import SplitSettings, split_messages
from swarm.stage import Job, Stage
from swarm.table import TableStore

log = logging.getLogger("swarm.master")


class Splitter:
    """The master's half of straggler splitting; ``tend`` once per look at a phase."""

    def __init__(self, job: Job, broker: Broker, ledger: MasterLedger, tables: TableStore, keys: SiteKeys,
                 settings: SplitSettings | None = None):
        self.job, self.broker, self.ledger, self.tables, self.keys = job, broker, ledger, tables, keys
        self.settings = settings or SplitSettings()
        # Messages judged not worth splitting: a message's range and the rows in it stay as they are, so
        # the next look need not read them again.
        self._declined: set[str] = set()

    def tend(self, run_id: str, phase: str, counts: Mapping[MessageState, int]) -> int:
        """Split what waits unclaimed in the phase's tail; how many messages were split."""
        open_messages = sum(n for state, n in counts.items() if not state.terminal)
        if not self.settings.enabled or open_messages > self.settings.tail:
            return 0
        split = 0
        for stage in self.job.stages.values():
            if stage.phase != phase or stage.ranges is None:
                continue
            if self.broker.depth(stage_queue(self.job.name, stage.name), delayed=False) != 0:
                continue  # work is ready on the queue: threads are not idle
            for message in self.ledger.unstarted(run_id, phase, [stage.name], self.settings.tail):
                if message.id not in self._declined:
                    split += self._split(run_id, phase, stage, message)
        return split

    def _split(self, run_id: str, phase: str, stage: Stage, message: Message) -> bool:
        try:
            env = decode(message.body, self.keys, stage.max_body)
            parts = split_messages(env, stage, env.seq, env.payload, self.settings, self.tables, self.keys)
        except (BadMessage, TableError) as exc:
            log.warning("not splitting %s: %s", message.id, describe(exc))
            self._declined.add(message.id)
            return False
        if not parts:
            self._declined.add(message.id)  # not worth it
            return False
        if not self.ledger.split(run_id, phase, message.id, parts):
            return False  # a worker claimed it meanwhile
        log.info("split %s, queued and never claimed, into %d parts at the end of phase %s", message.id,
                 len(parts), phase)
        failpoint("master.after_split")
        self.broker.publish([(stage_queue(self.job.name, p.stage), p.body) for p in parts])
        return True
