"""A job whose one message fails with an error that would run as a script if a page rendered it as HTML."""
from swarm import Chunk, Fault, Job
from swarm.stage import Retry
from tests.support.console import HOSTILE

job = Job("hostile", params=("date",), description="fails with a hostile error, for the console's tests")


@job.planner("map")
def plan(ctx):
    yield Chunk("c0", {"row": HOSTILE})


@job.stage("parse", phase="map", retry=Retry(max_attempts=1))
def parse(ctx, msg):
    raise Fault(HOSTILE)
