"""merchant_slow with a poisoned chunk: while ``poison_file`` exists, its scan fails with a hostile error.

Retried once, then dead-lettered: the console's tests replay it after the "fix" (the file removed).
"""
import dataclasses
import os

from swarm import Fault, Job
from swarm.stage import Retry
from tests.support import slowjob
from tests.support.console import HOSTILE

job = Job("merchant_console", params=("date",), description="merchant_slow, with a chunk that fails until fixed")


def _poisoned(handler):
    def poisoned(ctx, msg):
        path, chunk = ctx.options.get("poison_file", ""), ctx.options.get("poison_chunk", "")
        if path and msg.stage == "scan" and msg.chunk == chunk and os.path.exists(path):
            raise Fault(f"{HOSTILE} in {msg.id}")
        return handler(ctx, msg)

    return poisoned


for _stage in slowjob.job.stages.values():
    job.add_stage(dataclasses.replace(_stage, handler=_poisoned(_stage.handler), retry=Retry(2, 0.2, 0.5)))
job.planners.update(slowjob.job.planners)
job.tables.update(slowjob.job.tables)
job.checks.update(slowjob.job.checks)
