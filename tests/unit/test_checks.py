"""Checks of a run's result: built-ins against the median of the last published runs, and custom ones."""
import pytest

from swarm import CheckResult, Job, checks
from swarm.checks import History, Result, summary, within
from swarm.errors import PluginError

ROWS = {
    "t": [(b"a", {b"f:n": b"2", b"f:x": b"1"}), (b"b", {b"f:n": b"3", b"f:x": b"1"}), (b"c", {b"f:n": b"5"})],
}


def result(rows=None) -> Result:
    data = ROWS if rows is None else rows
    return Result("j@date=d", {"date": "d"}, {"seen": 3}, lambda table: iter(data[table]))


def history(values: dict[str, list[float]]) -> History:
    return History(lambda name, runs: values.get(name, [])[:runs])


def test_within_compares_with_the_median_and_passes_while_the_history_is_short():
    assert within("n", 50, [100, 98, 102], 0.3, 3) == CheckResult(
        "n", False, 50, 100, "±30% of the median of the last 3 published run(s)", "50 is 50.0% under the expected 100")
    assert within("n", 80, [100, 98, 102], 0.3, 3).passed
    short = within("n", 1, [100], 0.3, 3)
    assert short.passed and short.expected is None and "fewer than 3: not compared" in short.detail


def test_row_count_and_column_total_measure_the_staged_result():
    count = checks.row_count("t", tolerance=0.1).run(result(), history({"row_count:t": [3, 3, 4]}))
    assert (count.passed, count.measured, count.expected) == (True, 3, 3)
    total = checks.column_total("t", "f:n", tolerance=0.1, runs=2, min_runs=2).run(
        result(), history({"total:t:f:n": [20, 20, 10]}))
    assert (total.passed, total.measured, total.expected) == (False, 10, 20)  # only the last 2 runs count


def test_required_columns_names_the_first_row_lacking_one_and_an_empty_result_fails():
    found = checks.required_columns("t", ["f:n", "f:x"]).run(result(), history({}))
    assert not found.passed and found.measured == 1 and found.detail == "1 of 3 row(s) lack a required column; " \
                                                                        "first: row b'c' lacks f:x"
    empty = checks.required_columns("t", ["f:n"]).run(result({"t": []}), history({}))
    assert (empty.passed, empty.detail) == (False, "the result has no rows")


def test_a_column_that_is_not_a_number_fails_the_check_naming_row_and_value():
    bad = checks.column_total("t", "f:n").run(result({"t": [(b"r1", {b"f:n": b"lots"})]}), history({}))
    assert not bad.passed and "row b'r1' column f:n: b'lots' is not a number" in bad.detail


def test_custom_checks_get_the_result_and_history_and_a_broken_one_holds_the_run():
    job = Job("j")
    job.table("t", ["f"], published=True)

    @job.check
    def few_rows(res, hist):
        return sum(1 for _ in res.rows("t")) < 10 and res.counters["seen"] == 3

    @job.check
    def compares(res, hist):
        return CheckResult("ignored", True, measured=len(hist.values("compares")), detail="named after the function")

    @job.check
    def broken(res, hist):
        raise ZeroDivisionError("oops")

    got = [c.run(result(), history({"compares": [1.0, 2.0]})) for c in job.checks.values()]
    assert [(r.name, r.passed) for r in got] == [("few_rows", True), ("compares", True), ("broken", False)]
    assert got[1].measured == 2 and got[2].detail == "the check raised ZeroDivisionError: oops"
    assert summary(got) == "1 of 3 check(s) failed: broken (the check raised ZeroDivisionError: oops)"
    one = CheckResult("n", False, 5, 10, "±10%")
    assert summary([one]) == "1 of 1 check(s) failed: n: measured 5, expected 10 ±10%"


def test_checks_read_only_published_tables_and_are_named_once():
    job = Job("j")
    job.table("plain", ["f"])
    job.table("out", ["f"], published=True)
    assert "out_staged" in job.tables and job.publishes
    with pytest.raises(PluginError, match="reads table 'plain', which the job does not declare published=True"):
        job.check(checks.row_count("plain"))
    job.check(checks.row_count("out"))
    with pytest.raises(PluginError, match="check 'row_count:out' declared twice"):
        job.check(checks.row_count("out"))
    with pytest.raises(PluginError, match="either intermediate or published"):
        job.table("both", ["f"], intermediate=True, published=True)
    with pytest.raises(PluginError, match="tolerance >= 0"):
        checks.row_count("out", tolerance=-1)
