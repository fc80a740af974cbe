"""The bench's arithmetic and report, on made-up results: no services, no timings asserted."""
import datetime
import json
import math

import pytest
from rich.console import Console

from bench import report
from bench.measure import growth, percentile, rate_between, steady_rate
from swarm.testing import call
from workers.jobs import noop_pipeline


def sample_results() -> dict:
    swarm = {"msgs_per_s": 600.0, "per_proc": 600.0, "procs": 1, "peak_rss_mib": 50.0,
             "latency_ms": {"p50": 9.0, "p99": 40.0, "samples": 10}, "cores": {"workers": 0.8, "mariadb": 0.6}}
    return {
        "date": "2030-01-01T00:00:00+00:00", "scale": 1.0,
        "host": {"cores": 2, "rabbitmq": "3.10.8", "mariadb": "10.11", "python": "3.11"},
        "raw_pika": {"msgs_per_s": 20_000.0, "per_proc": 20_000.0, "procs": 1, "prefetch": 1000},
        "swarm": {"1": swarm, "2": dict(swarm, msgs_per_s=900.0, per_proc=450.0, procs=2)},
        "celery": {"msgs_per_s": 300.0, "per_proc": 150.0, "procs": 2, "peak_rss_mib": 120.0},
        "nightly": {"rows_per_s": 10_000.0, "chunks_per_s": 15.0, "procs": 2, "seconds": 3.0, "peak_rss_mib": 51.0},
        "overload": {"offered_chunks_per_s": 4500.0, "target_chunks_per_s": 4500.0, "seconds": 30.0, "procs": 2,
                     "msgs_per_s": 855.0, "vs_peak": 0.95, "rss_mib": [[0.0, 70.0], [6.0, 100.0], [29.0, 101.0]],
                     "rss_growth": 0.01, "backlog_at_end": 120_000, "settle": 5.0, "cores": {"workers": 0.7}},
        "overload_backlog": {"queued_chunks": 90_000, "seconds": 30.0, "procs": 2, "msgs_per_s": 810.0,
                             "vs_peak": 0.9, "rss_mib": [[0.0, 70.0], [6.0, 100.0], [29.0, 130.0]],
                             "rss_growth": 0.3, "backlog_at_end": 80_000, "settle": 5.0, "cores": {"workers": 0.9}},
        "overload_bounded": {"offered_chunks_per_s": 4000.0, "target_chunks_per_s": 4500.0, "seconds": 30.0,
                             "procs": 2, "msgs_per_s": 810.0, "vs_peak": 0.9, "max_queue": 5000,
                             "most_ready": {"swarm.noop_pipeline.a": 5100, "swarm.noop_pipeline.b": 0},
                             "refused_offers": 1234, "rss_mib": [[0.0, 70.0], [6.0, 100.0]], "rss_growth": 0.02,
                             "backlog_at_end": 5000, "settle": 5.0, "cores": {"workers": 0.8}},
        "backpressure": {"chunks": 12_000, "procs": 2, "consume_sleep": 0.02, "slower": 10.0,
                         "consume_msgs_per_s": 380.0, "consume_capacity": 400.0, "vs_capacity": 0.95,
                         "sleep_capacity": 500.0, "max_queue": 100, "most_ready": 100, "most_ready_produce": 10_000,
                         "empty_share": 0.02, "unbounded_most_ready": 11_000, "rss_start_mib": 120.0,
                         "rss_end_mib": 124.0, "alarm": False},
        "security": {"signing": {"messages": 100, "us_signed": 17.0, "us_plain": 7.0, "us_added": 10.0,
                                 "bytes_signed": 169, "bytes_plain": 116},
                     "children": {"batches": 4, "batch": 64, "ms_per_msg_with_child": 0.08,
                                  "ms_per_msg_without": 0.05, "ms_per_child_row": 0.03}},
        "master": {"chunks": 100_000, "start_seconds": 0.3, "plan_seconds": 3.0, "publish_seconds": 20.0,
                   "total_seconds": 23.3, "resume": {"queued_at_kill": 50_000, "resume_seconds": 9.0,
                                                     "republished": 0}},
    }


def test_steady_rate_leaves_out_the_start_and_the_tail():
    times = [0.0] * 5 + [1 + i / 100 for i in range(100)] + [50.0] * 5  # a slow start and a straggler
    result = steady_rate(times, procs=2)
    assert result.messages == 110
    assert 90 < result.msgs_per_s < 110
    assert result.per_proc == result.msgs_per_s / 2


def test_small_helpers():
    assert percentile([3, 1, 2, 4], 0.5) == 2
    assert math.isnan(percentile([], 0.5))
    assert rate_between([0.5, 1.5, 2.5, 3.5], 1.0, 3.0) == 1.0
    assert growth([(0.0, 50.0), (5.0, 100.0), (9.0, 110.0)], settle=5.0) == pytest.approx(0.1)


def test_ratios_and_targets_come_from_the_same_run():
    results = report.finish(sample_results())
    assert results["ratios"]["swarm_vs_raw_per_proc"] == 600 / 20_000
    assert results["ratios"]["swarm_vs_celery"] == 3.0
    targets = results["targets"]
    assert targets["swarm_vs_raw_per_proc"]["met"] is False
    assert targets["swarm_vs_celery"]["met"] is True
    assert targets["master_resume_seconds"]["met"] is False
    assert targets["overload_backlog_vs_peak"]["met"] is True
    assert targets["overload_bounded_vs_peak"]["met"] is True and targets["backpressure_vs_capacity"]["met"] is True
    assert results["ratios"]["overload_rss_growth"] == 0.3  # the larger of the two overload cases
    assert targets["overload_rss_growth"]["met"] is False


def test_the_report_prints_every_case():
    results = report.finish(sample_results())
    console = Console(record=True, width=200)
    report.show(results, console)
    text = console.export_text()
    for expected in ("raw pika", "Swarm noop, 2 proc", "Celery chain", "merchant_daily", "overload",
                     "backlog queued ahead: 90,000 chunks", "master",
                     "bounded stages (max_queue 5,000)", "1,234 offers refused", "most ready seen: a 5,100, b 0",
                     "380 msgs/s = 95% of its capacity, 400 unbounded (76% of its threads' 500)",
                     "most ready seen 100 vs its bound 100 (unbounded 11,000",
                     "resource alarm: no",
                     "cores used: workers 0.80",
                     "+10.0 us = 1% of a no-op message's worker CPU (1,333 us)", "+0.030 ms per child row"):
        assert expected in text


def test_missing_cases_leave_gaps_not_errors():
    results = report.finish({"date": "2030-01-01", "raw_pika": {"msgs_per_s": 1.0, "per_proc": 1.0}})
    assert results["targets"]["swarm_vs_celery"]["met"] is None
    report.show(results, Console(record=True, width=200))


def test_results_are_written_as_strict_json_twice(tmp_path):
    results = report.finish(sample_results())
    results["swarm"]["1"]["latency_ms"]["p99"] = math.nan
    paths = report.write(results, tmp_path, now=datetime.datetime(2030, 1, 2, 3, 4, 5))
    assert [p.name for p in paths] == ["latest.json", "2030-01-02T030405.json"]
    loaded = json.loads(paths[1].read_text())
    assert loaded["swarm"]["1"]["latency_ms"]["p99"] is None


def test_the_noop_job_forwards_a_to_b_and_plans_from_options():
    assert [s.stage for s in call(noop_pipeline.forward, {})] == ["b"]
    assert call(noop_pipeline.finish, {}) == []
    chunks = list(noop_pipeline.plan(type("Ctx", (), {"options": {"chunks": 3}})()))
    assert [c.id for c in chunks] == ["c0000000", "c0000001", "c0000002"]
