"""The nightly case's report: Swarm's rows/s beside a plain scan-and-fold's, and their ratio. No services."""
from rich.console import Console

from bench import report


def test_the_nightly_line_shows_the_scan_and_fold_and_the_ratio():
    nightly = {"events": 100_000, "rows_per_s": 10_000.0, "chunks_per_s": 15.0, "procs": 2, "seconds": 10.0,
               "peak_rss_mib": 51.0, "store": "HBase 2.6.1", "map_rows_per_s": 20_000.0, "regions": 8,
               "exact": True,
               "scan_fold": {"rows_per_s": 40_000.0, "runs_rows_per_s": [38_000.0, 40_000.0], "seconds": 2.5},
               "vs_scan_fold": 0.25}
    results = report.finish({"date": "2030-01-01", "nightly": nightly})
    assert results["ratios"]["nightly_vs_scan_fold"] == 0.25
    console = Console(record=True, width=400)
    report.show(results, console)
    text = console.export_text()
    assert "10,000 rows/s (0.25x a plain scan-and-fold's 40,000)" in text
    assert "on HBase 2.6.1, 100,000 events in 8 region(s)" in text
    assert "(runs: 38,000, 40,000); Swarm = 0.25x of it, summaries equal: yes" in text
    assert "rows/s end to end (map, barrier, reduce), 20,000 in the map phase;" in text


def test_a_nightly_result_without_the_baseline_still_shows():
    nightly = {"rows_per_s": 10_000.0, "chunks_per_s": 15.0, "procs": 2, "seconds": 3.0, "peak_rss_mib": 51.0}
    console = Console(record=True, width=300)
    report.show(report.finish({"nightly": nightly}), console)
    assert "10,000 rows/s, 15.0 chunks/s" in console.export_text()
