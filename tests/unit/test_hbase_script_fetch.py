"""deploy/dev/hbase.sh fetching HBase with Maven: a repository's passing failure (a 503) is tried again."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import ROOT

# Stands in for mvn: fails with a 503 the first FAILS times, then makes the lib folder Maven would fill.
FAKE_MVN = """#!/bin/bash
for a in "$@"; do case $a in -Dhbase.dev.lib=*) lib=${a#-Dhbase.dev.lib=};; esac; done
calls=$(( $(cat "$FAKE_DIR/calls" 2>/dev/null || echo 0) + 1 )); echo $calls > "$FAKE_DIR/calls"
echo "$*" >> "$FAKE_DIR/args"
if [ "$calls" -le "$FAILS" ]; then
  echo "[ERROR] transfer failed for https://repo/x.pom, status: 503 Service Unavailable -> [Help 1]"; exit 1
fi
mkdir -p "$lib" && touch "$lib/hbase.jar"
"""


def resolve(tmp_path: Path, fails: int) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mvn").write_text(FAKE_MVN)
    (bin_dir / "mvn").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path), "FAILS": str(fails),
           "HBASE_DEV_CACHE": str(tmp_path / "cache"), "HBASE_DEV_RETRY_PAUSE": "0"}
    return subprocess.run(["bash", str(ROOT / "deploy" / "dev" / "hbase.sh"), "resolve"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_failed_fetch_is_tried_again_without_maven_remembering_the_failure(tmp_path):
    done = resolve(tmp_path, fails=2)
    assert done.returncode == 0, done.stderr
    assert "try 1 of 4: status: 503 Service Unavailable" in done.stderr
    calls = (tmp_path / "args").read_text().splitlines()
    assert len(calls) == 3 and "-U" not in calls[0].split() and all("-U" in c.split() for c in calls[1:])
    assert (tmp_path / "cache" / "lib" / "hbase.jar").exists()


def test_four_failed_fetches_end_with_the_reason(tmp_path):
    done = resolve(tmp_path, fails=4)
    assert done.returncode != 0
    assert "could not fetch HBase or build DevAdmin after 4 tries" in done.stderr
    assert "503 Service Unavailable" in done.stderr  # the end of Maven's log
    assert len((tmp_path / "args").read_text().splitlines()) == 4
