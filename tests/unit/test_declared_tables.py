"""Jobs declare their tables: writes elsewhere are bad output, a missing table is named, and masters check first."""
import pytest

from swarm import Put
from swarm.errors import TableError
from swarm.ledger import MessageState
from swarm.runtime import ABORTED, DONE
from swarm.stage import TableSpec
from tests.unit.test_runtime import RUN, FakeDelivery, envelope, planned, setup  # noqa: F401
from tests.unit.toyjob import job, use_sink

SINK = "swarm.toy.sink"


@pytest.mark.parametrize("put, reason", [
    (Put("elsewhere", "r", {"f:n": 1}), "Put to table 'elsewhere', which the job does not declare (it declares: out)"),
    (Put("out", "r", {"z:n": 1}), "column family 'z' is not declared (the table has f)"),
    (Put("out", "r", {"n": 1}), "must be 'family:qualifier'"),
])
def test_a_write_the_job_does_not_declare_aborts_with_what_was_wrong(setup, ledger, monkeypatch, put, reason):
    use_sink(monkeypatch, lambda ctx, msg: put)
    outcome, d = deliver_one(setup(), ledger)
    assert (outcome, d.acked) == (ABORTED, 1)
    [failure] = ledger.failures(RUN)
    assert failure.state == MessageState.ABORTED and reason in failure.error, failure.error


def test_a_table_that_does_not_exist_aborts_its_writers_with_that_cause_and_spares_the_rest(
        setup, ledger, tables, monkeypatch):
    monkeypatch.setitem(job.tables, "side", TableSpec("side", ("f",)))  # declared, but never created
    use_sink(monkeypatch, lambda ctx, msg: Put("side" if msg.payload["n"] == 2 else "out", "r", {"f:n": 1}))
    batch = [FakeDelivery(SINK, planned(ledger, envelope(n=n))) for n in (1, 2, 3)]
    assert setup().handle_batch(batch) == [DONE, ABORTED, DONE]
    [failure] = ledger.failures(RUN)
    assert "table 'side' does not exist" in failure.error


def test_reading_a_table_that_does_not_exist_aborts_with_the_cause(setup, ledger, monkeypatch):
    use_sink(monkeypatch, lambda ctx, msg: list(ctx.tables.scan("never_made")))
    assert deliver_one(setup(), ledger)[0] == ABORTED
    assert "table 'never_made' does not exist" in ledger.failures(RUN)[0].error


def test_a_master_refuses_to_start_while_a_declared_table_is_missing(ledger, tables):
    from swarm.testing import run_job

    with pytest.raises(TableError, match=r"table\(s\) out do not exist; create them with `swarm tables create toy`"):
        run_job(job, {"date": "2026-11-22"}, tables, ledger)
    assert ledger.get_run(RUN) is None  # nothing was started


def deliver_one(proc, ledger):
    d = FakeDelivery(SINK, planned(ledger, envelope(n=1)))
    return proc.handle(d), d
