"""Logs an operator can use: text or JSON lines, and no data values at INFO."""
from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm import Abort, config
from swarm.errors import ConfigError
from swarm.logsetup import JsonFormatter
from swarm.testing import run_job
from tests.support import ROOT
from tests.unit.toyjob import job, use_sink


def swarm(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env), timeout=120)


def test_json_logs_are_one_object_a_line_with_the_time_in_utc(tmp_path):
    (tmp_path / "swarm.toml").write_text('[jobs]\nmodules = ["tests.unit.toyjob"]\n')
    assert swarm(tmp_path, "tables", "create", "toy").returncode == 0
    done = swarm(tmp_path, "run", "toy", "--date", "2026-11-01", SWARM_LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(e["message"] == "run toy@date=2026-11-01 done" for e in entries)
    for entry in entries:
        assert set(entry) == {"ts", "level", "logger", "message"}
        assert datetime.datetime.fromisoformat(entry["ts"]).utcoffset() == datetime.timedelta(0)


def test_a_json_line_carries_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("swarm.worker", logging.ERROR, __file__, 1, "failed on %s", ("q",),
                                   sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "swarm.worker", "failed on q")
    assert entry["exc"].startswith("Traceback") and entry["exc"].endswith("ValueError: boom")


def test_an_unknown_log_format_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="log.format"):
        config.load(None, env={"SWARM_LOG_FORMAT": "xml"})


def test_info_lines_carry_no_data_values(tables, ledger, monkeypatch, caplog):
    tables.create_table("out", ["f"])

    def refuse(ctx, msg):
        raise Abort(f"cell value {msg.payload['n']}-s3cret-cell in row r{msg.payload['n']}")

    use_sink(monkeypatch, refuse)
    caplog.set_level(logging.INFO)
    assert run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 2}).status == "failed"
    assert run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 2}).status == "failed"  # resumed
    assert "s3cret-cell" in ledger.get_run("toy@date=2026-11-22").error
    info = [r.getMessage() for r in caplog.records if r.levelno <= logging.INFO]
    assert any("failed before; resuming it" in line for line in info)
    assert not [line for line in info if "s3cret-cell" in line]
