"""A small job for runtime tests: double numbers, then sum them in a sink."""
import dataclasses

from swarm import Abort, Chunk, Count, Fault, Job, Put, Retry, Send
from swarm.errors import BadMessage

job = Job("toy", params=("date",))
job.table("out", ["f"])
FAST = Retry(max_attempts=3, base_delay=0.01, max_delay=0.02)


def _check(payload):
    if not isinstance(payload.get("n"), int):
        raise BadMessage("payload['n'] must be an int")


@job.planner("main")
def plan(ctx):
    for n in range(int(ctx.options.get("count", 5))):
        yield Chunk(f"n{n}", {"n": n})


@job.stage("double", phase="main", pool=2, retry=FAST, next=("sink",), validate=_check, timeout=5)
def double(ctx, msg):
    return [Send("sink", {"n": msg.payload["n"] * 2}), Count("doubled")]


@job.stage("sink", phase="main", pool=2, retry=FAST, timeout=5)
def sink(ctx, msg):
    n = msg.payload["n"]
    behaviour = ctx.options.get("behaviour", {}).get(str(n))
    if behaviour == "crash":
        raise ValueError(f"boom on {n}")
    if behaviour == "flaky" and msg.attempt == 1:
        raise Fault("flaky first time")
    if behaviour == "abort":
        raise Abort(f"{n} is not allowed")
    if behaviour == "stray":
        return Send("nowhere", {})
    return [Put("out", f"row{n:04d}", {"f:n": n}), Count("sunk"), Count("total", n)]


def use_sink(monkeypatch, handler, **changes):
    """Swap the sink stage's handler (and settings) for one test; pytest restores it afterwards."""
    stage = dataclasses.replace(job.stages["sink"], handler=handler, **changes)
    monkeypatch.setitem(job.stages, "sink", stage)
    return stage
