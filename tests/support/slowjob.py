"""merchant_daily with a configurable pause in every handler, so tests can kill things mid-message."""
import dataclasses
import functools
import os
import time
import zlib

from swarm import Fault, Job
from workers.jobs import merchant_daily as md

job = Job("merchant_slow", params=("date",), description="merchant_daily, slowed down for fault tests")

# Seconds more that this process's handlers pause on a message's first attempt: one worker slow where the
# others are not (the config's options are every worker's).
FIRST_ATTEMPT_PAUSE = "SLOWJOB_FIRST_ATTEMPT_PAUSE"  # not SWARM_: those must name settings


def _slowed(handler):
    @functools.wraps(handler)
    def slow(ctx, msg):
        time.sleep(float(ctx.options.get("sleep", 0.0)))
        if msg.attempt == 1:
            time.sleep(float(os.environ.get(FIRST_ATTEMPT_PAUSE, "0")))
        every = int(ctx.options.get("fault_every", 0))
        if every and msg.attempt == 1 and zlib.crc32(msg.id.encode()) % every == 0:
            raise Fault(f"injected fault in {msg.id}")  # once per chosen message: its retry succeeds
        return handler(ctx, msg)

    return slow


for _stage in md.job.stages.values():
    job.add_stage(dataclasses.replace(_stage, handler=_slowed(_stage.handler)))
job.planners.update(md.job.planners)
job.tables.update(md.job.tables)
job.checks.update(md.job.checks)  # the fault suite checks, then publishes, as the example job does
