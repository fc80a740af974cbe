"""``swarm tables``: a job's tables created, rows loaded from files, scanned, counted, dropped."""
import json

import pytest

from swarm import Job
from swarm.backends import open_tables
from swarm.cli import EXIT_OK, EXIT_USAGE, main

JOB_MODULE = '''
from swarm import Job
job = Job("pages", params=("date",))
job.table("pageviews", ["v"], splits=["m"])
job.table("domain_daily", ["d"])
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    (tmp_path / "pagesjob.py").write_text(JOB_MODULE)
    (tmp_path / "swarm.toml").write_text(
        f'[backends]\ntables = "embedded:///{tmp_path}/tables.db"\nledger = "sqlite:///{tmp_path}/l.db"\n'
        '[jobs]\nmodules = ["pagesjob"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_a_jobs_tables_then_load_scan_count_and_drop(site, capsys):
    assert run(capsys, "tables", "create", "pages")[1] == "pageviews: created\ndomain_daily: created\n"
    assert run(capsys, "tables", "create", "pages")[1] == "pageviews: exists\ndomain_daily: exists\n"
    assert run(capsys, "tables", "list")[1].split() == ["domain_daily", "pageviews"]
    (site / "views.jsonl").write_text('{"row": "a.com/1", "v:url": "http://a.com/", "v:ms": 120}\n\n'
                                      '{"row": "b.org/1", "v:url": "http://b.org/x", "v:ms": 7}\n')
    assert run(capsys, "tables", "load", "pageviews", "views.jsonl")[1] == "loaded 2 row(s) into pageviews\n"
    (site / "more.csv").write_text("key,url,ms\nc.net/1,http://c.net/,55\n")
    code, out, _ = run(capsys, "tables", "load", "pageviews", "more.csv", "--key", "key", "--family", "v")
    assert (code, out) == (EXIT_OK, "loaded 1 row(s) into pageviews\n")
    code, out, _ = run(capsys, "tables", "scan", "pageviews", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {"row": "a.com/1", "v:ms": "120", "v:url": "http://a.com/"}  # numbers stored as text
    assert [r["row"] for r in rows] == ["a.com/1", "b.org/1", "c.net/1"]
    assert run(capsys, "tables", "scan", "pageviews", "--prefix", "b.")[1] == "b.org/1  v:ms=7  v:url=http://b.org/x\n"
    assert run(capsys, "tables", "scan", "pageviews", "--limit", "1", "--columns", "v:ms")[1] == "a.com/1  v:ms=120\n"
    assert run(capsys, "tables", "count", "pageviews", "--start", "b")[1] == "2\n"
    code, _, err = run(capsys, "tables", "drop", "pageviews")
    assert code == EXIT_USAGE and "add --yes" in err
    assert run(capsys, "tables", "drop", "pageviews", "--yes")[1] == "dropped pageviews\n"
    assert run(capsys, "tables", "list")[1].split() == ["domain_daily"]
    tables = open_tables(f"embedded:///{site}/tables.db")
    assert tables.tables() == ["domain_daily"]
    tables.close()


@pytest.mark.parametrize("content, args, says", [
    ('{"row": "a", "url": "x"}\n', [], "line 1: field 'url' is not a 'family:qualifier' column"),
    ('{"url": "x", "v:ms": 1}\n', [], "line 1: no row key: the field 'row' is missing"),
    ('{"row": "a", "v:tags": [1, 2]}\n', [], "field 'v:tags' is a list"),
    ('{"row": "a", "v:ms": 1}\nnot json\n', [], "line 2: not JSON"),
    ('[1, 2]\n', [], "expected a JSON object"),
    ('{"row": "a", "x:ms": 1}\n', [], "column family 'x' does not exist in table 'pageviews'"),
])
def test_bad_rows_are_refused_with_what_and_where(site, capsys, content, args, says):
    run(capsys, "tables", "create", "pages")
    (site / "bad.jsonl").write_text(content)
    code, _, err = run(capsys, "tables", "load", "pageviews", "bad.jsonl", *args)
    assert code == EXIT_USAGE and says in err, err


def test_loading_into_a_table_that_does_not_exist_says_how_to_make_it(site, capsys):
    (site / "v.jsonl").write_text('{"row": "a", "v:ms": 1}\n')
    code, _, err = run(capsys, "tables", "load", "pageviews", "v.jsonl")
    assert code == EXIT_USAGE and "does not exist; create it first" in err
    code, _, err = run(capsys, "tables", "create", "nosuchjob")
    assert code == EXIT_USAGE and "nosuchjob" in err


def test_a_job_declares_its_tables_once_and_validly():
    job = Job("j")
    job.table("t", ["f"])
    from swarm.errors import PluginError

    for bad in (lambda: job.table("t", ["f"]), lambda: job.table("u", []), lambda: job.table("v", ["a:b"]),
                lambda: job.table("has space", ["f"])):
        with pytest.raises(PluginError):
            bad()
