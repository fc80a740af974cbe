"""The README's examples for planning by regions and for an HBase cluster run, or load, as written."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def subsection(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i != -1]
    return text[start:min(ends) if ends else None]


def test_plans_that_follow_the_regions_run_as_written():
    blocks = [code for lang, code in FENCE.findall(subsection("Plans that follow the regions")) if lang == "python"]
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {})  # noqa: S102 - the project's own README


def test_the_hbase_cluster_example_is_a_config_that_loads(tmp_path):
    from swarm.config import load
    from swarm.tables.hbase import HBaseTables

    blocks = [code for lang, code in FENCE.findall(subsection("Pointing Swarm at an HBase cluster")) if lang == "toml"]
    assert len(blocks) == 1
    (tmp_path / "swarm.toml").write_text(blocks[0])
    cfg = load(str(tmp_path / "swarm.toml"), env={})
    tables = HBaseTables(cfg["backends"]["tables"])  # nothing connects yet
    assert tables.servers == [("thrift1.example", 9090), ("thrift2.example", 9090)]
    assert (tables.prefix, tables.timeout_ms) == ("nightly", 20000)
