"""The README's examples run as written: the first screen's job, and "Your first job" steps 1 to 4 in order."""
import os
import re
import subprocess
import sys
from pathlib import Path

from swarm.ledgers.sqlite import SqliteLedger
from swarm.tables.embedded import EmbeddedTables
from swarm.testing import run_job
from tests.support import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_first_handler_example_its_one_line_test_and_the_job_run():
    text = README.read_text()
    block = FENCE.search(text[text.index("A stage handler is"):]).group(2)
    one_line = re.search(r"`(assert call\(.*?)`", text).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    exec("from swarm.testing import call\n" + one_line, namespace)  # noqa: S102
    tables = EmbeddedTables()
    tables.create_table("urls", ["d"])
    run = run_job(namespace["job"], {"date": "2026-11-01"}, tables, SqliteLedger(),
                  options={"urls": ["http://A.example/", "http://b.example/x"]})
    assert run.status == "done", run.error
    assert tables.row("urls", b"http://a.example/") == {b"d:seen": b"2026-11-01"}


def test_your_first_job_steps_one_to_four_run_as_written(tmp_path):
    steps = section("Your first job").split("**5.")[0]
    blocks = [(lang, code) for lang, code in FENCE.findall(steps) if lang in ("sh", "python")]
    assert [lang for lang, _ in blocks] == ["sh", "sh", "sh", "python", "sh", "python"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # as a job author's shell: the job is found through its swarm.toml
    for lang, code in blocks:
        commands = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
        if lang == "python":
            commands = [[sys.executable, "-c", code]]
        for command in commands:
            done = subprocess.run(command, shell=isinstance(command, str), cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "url_daily.py").exists() and (tmp_path / "swarm-tables.db").exists()


def test_every_file_the_readme_names_exists():
    # "How it works" follows a message file by file: a file moved or renamed must take the README with it.
    root = README.parent
    named = set(re.findall(r"`((?:swarm|master|workers|deploy|tests|bench)/[\w./-]+)`", README.read_text()))
    written = {"bench/results/latest.json"}  # what `make bench` writes, so not in a clean clone
    assert written <= named and len(named) > 30
    assert sorted(path for path in named - written if not (root / path).exists()) == []
