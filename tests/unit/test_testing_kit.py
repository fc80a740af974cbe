"""``swarm.testing``: a handler test sees what a worker would make of its effects."""
import pytest

from swarm import Abort, Chunk, Count, Job, Put, Send
from swarm.envelope import Envelope, encode
from swarm.errors import ConfigError, PluginError
from swarm.signing import process_keys
from swarm.testing import call, fake_tables, plan, replay

job = Job("urls", params=("date",))
job.table("pageviews", ["v"])
job.table("domain_daily", ["d"])


@job.planner("map")
def planner(ctx):
    for key, _ in ctx.tables.scan("pageviews"):
        yield Chunk(key.decode().replace("/", "-"), {"row": key})


@job.stage("count", phase="map", next=("store",))
def count(ctx, msg):
    cells = ctx.tables.row("pageviews", msg.payload["row"])
    domain = cells[b"v:url"].decode().split("/")[2]
    return [Send("store", {"domain": domain, "n": 1}), Count("views")]


@job.stage("store", phase="map")
def store(ctx, msg):
    if msg.payload.get("bad") == "column":
        return Put("domain_daily", msg.payload["domain"], {"views": msg.payload["n"]})
    if msg.payload.get("bad") == "table":
        return Put("elsewhere", msg.payload["domain"], {"d:views": 1})
    if msg.payload.get("bad") == "dict":
        return {"domain": msg.payload["domain"]}
    if msg.payload.get("bad") == "send":
        return Send("nowhere", {})
    if msg.payload.get("bad") == "attempt":
        return Count("attempt", msg.attempt)
    return Put("domain_daily", f"{ctx.params['date']}/{msg.payload['domain']}", {"d:views": msg.payload["n"]})


def test_a_handler_reading_fake_tables_in_one_line():
    tables = fake_tables({"pageviews": {"a.com/1": {"v:url": "http://a.com/x"}}}, job)
    assert call(count, {"row": b"a.com/1"}, tables=tables) == [Send("store", {"domain": "a.com", "n": 1}),
                                                               Count("views")]


def test_puts_compare_by_the_bytes_they_write():
    assert call(store, {"domain": "a.com", "n": 2}, params={"date": "2026-11-01"}) == [
        Put("domain_daily", "2026-11-01/a.com", {"d:views": "2"})]
    assert Put("t", "r", {"f:a": 2}) == Put("t", b"r", {b"f:a": b"2"}) != Put("t", b"r", {b"f:a": b"3"})
    assert len({Put("t", "r", {"f:a": 2}), Put("t", b"r", {b"f:a": b"2"})}) == 1


@pytest.mark.parametrize("bad, error, says", [
    ("column", PluginError, "must be 'family:qualifier'"),
    ("table", PluginError, "table 'elsewhere', which the job does not declare"),
    ("dict", PluginError, "expected Put, Delete, Send, Continue or Count"),
    ("send", Abort, "sent to 'nowhere', which is not in its next=[]"),
])
def test_what_a_worker_would_refuse_call_refuses_too(bad, error, says):
    with pytest.raises(error, match=says.replace("[", r"\[").replace("]", r"\]")):
        call(store, {"domain": "a.com", "n": 1, "bad": bad})


def test_attempt_is_what_the_handler_sees():
    assert call(store, {"domain": "a.com", "n": 1, "bad": "attempt"}, attempt=3) == [Count("attempt", 3)]


def test_a_planner_in_one_line():
    tables = fake_tables({"pageviews": {"a.com/1": {"v:url": "u"}, "b.org/9": {"v:url": "u"}}}, job)
    assert [c.id for c in plan(job, tables=tables)] == ["a.com-1", "b.org-9"]
    with pytest.raises(PluginError, match="has no planner"):
        plan(job, "reduce")


def test_replay_runs_a_recorded_message_against_given_tables():
    body = encode(Envelope("urls", "urls@date=2026-11-02", "map", "store", "c9", payload={"domain": "b.org", "n": 5}),
                  process_keys())
    assert replay(job, body) == [Put("domain_daily", "2026-11-02/b.org", {"d:views": 5})]
    with pytest.raises(ConfigError, match="does not decode"):
        replay(job, b"\xc1")
