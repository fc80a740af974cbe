"""The skewed-day case's report: times with straggler splitting off and on, and their ratio. No services."""
from rich.console import Console

from bench import report


def test_the_skew_line_shows_both_runs_and_the_ratio():
    off = {"seconds": 12.0, "map_seconds": 10.0, "parts": 0, "exact": True}
    on = {"seconds": 6.0, "map_seconds": 4.0, "parts": 12, "exact": True}
    skew = {"events": 100_000, "hot": 0.5, "chunks": 32, "slice_rows": 5000, "procs": 2, "store": "HBase 2.6.1",
            "split": {"enabled": True, "ways": 4, "tail": 8, "min_rows": 20_000}, "off": off, "on": on,
            "speedup": 2.0, "map_speedup": 2.5}
    results = report.finish({"date": "2030-01-01", "skew": skew})
    assert results["ratios"]["skew_split_speedup"] == 2.0
    console = Console(record=True, width=500)
    report.show(results, console)
    text = console.export_text()
    assert "skewed day on HBase 2.6.1, 100,000 events, 50% in one of 32 chunks, slices of 5,000 rows" in text
    assert "splitting off 12.0 s (map 10.0 s), on 6.0 s (map 4.0 s, 12 parts; ways 4, tail 8, min_rows 20,000)" in text
    assert "2.00x faster end to end, 2.50x the map phase; summaries exact: yes" in text
