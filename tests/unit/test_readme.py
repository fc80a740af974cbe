"""The README's examples run as written: the first screen's job, "Your first job" steps 1 to 4 in order, the
slices of "Long ranges", and the job, reruns and generations of "Generations, checks and published tables"."""
import os
import re
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

from master.rerun import describe, plan_rerun, run_rerun
from swarm import config, generations
from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.ledgers.sqlite import SqliteLedger
from swarm.local import local_fleet
from swarm.publishing import publish_held
from swarm.tables.embedded import EmbeddedTables
from swarm.testing import fake_tables, run_job
from tests.support import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def subsection(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i != -1]
    return text[start:min(ends) if ends else None]


def shown(title: str, command: str) -> list[tuple[str, list[str]]]:
    """The ``text`` blocks of a subsection that show ``$ <command>...`` and its output: (command line, output)."""
    found = []
    for lang, code in FENCE.findall(subsection(title)):
        first, *rest = code.rstrip("\n").splitlines()
        if lang == "text" and first.startswith(f"$ {command}"):
            found.append((first[2:], rest))
    return found


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


def rerun(plan, job, params, ledger, tables):
    """Carry out a planned rerun with two worker threads, as `swarm rerun` does on an in-process broker."""
    hub = MemoryHub()
    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2):
        return run_rerun(plan, job, params, MemoryBroker(hub), ledger, tables)


VISITS = {  # page views per night: three usual nights, then one without the home page and half the pages
    "2026-11-01": {"home": 6, "cart": 3, "pay": 2, "help": 1},
    "2026-11-02": {"home": 5, "cart": 4, "pay": 2, "help": 1},
    "2026-11-03": {"home": 7, "cart": 3, "pay": 1, "help": 2},
    "2026-11-04": {"cart": 3, "pay": 2},
}


def test_the_generations_checks_and_reruns_example_runs_as_written():
    blocks = [code for lang, code in FENCE.findall(subsection("Generations, checks and published tables"))
              if lang == "python"]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    job = namespace["job"]
    assert list(job.checks) == ["columns:visits_daily", "row_count:visits_daily", "total:visits_daily:d:views",
                                "home_page_seen", "top_page_share"]
    assert job.tables["visits_partials"].intermediate and job.tables["visits_daily"].published
    assert not job.tables["visits"].intermediate and "visits_daily_staged" in job.tables

    rows = {f"{date}/{i % 16:x}{i:03d}": {"v:page": page}
            for date, views in VISITS.items()
            for i, page in enumerate(p for p, n in views.items() for _ in range(n))}
    tables, ledger = fake_tables({"visits": rows}, job), SqliteLedger()
    runs = {date: run_job(job, {"date": date}, tables, ledger) for date in VISITS}

    def published(date: str) -> dict[str, int]:
        return {key.decode().split("/")[1]: int(cells[b"d:views"])
                for key, cells in tables.scan("visits_daily", prefix=f"{date}/".encode())}

    for date in ("2026-11-01", "2026-11-02", "2026-11-03"):
        assert runs[date].status == "done", runs[date].error
        assert published(date) == VISITS[date]
    held = runs["2026-11-04"]
    quoted = re.search(r"its error names each failed check, as `(.*?)`", subsection("Checks and held runs"), re.S)
    assert held.status == "held" and " ".join(quoted.group(1).split()) in held.error
    assert "home_page_seen" in held.error and published("2026-11-04") == {}
    assert {c.name: c.passed for c in ledger.checks(held.id)} == {
        "columns:visits_daily": True, "home_page_seen": False, "row_count:visits_daily": False,
        "top_page_share": True, "total:visits_daily:d:views": True}
    assert publish_held(job, held.id, "a quiet night", ledger, tables, "test").status == "done"
    assert published("2026-11-04") == VISITS["2026-11-04"]

    reruns = shown("Generations and reruns", "swarm rerun")
    assert len(reruns) == 2
    for command, output in reruns:
        date, stage = re.search(r"--date (\S+) --from-stage (\S+) --dry-run$", command).groups()
        plan = plan_rerun(job, {"date": date}, stage, ledger, tables)
        assert describe([plan], job).splitlines() == output
        run = rerun(plan, job, {"date": date}, ledger, tables)
        assert run.status == "done", run.error
        assert published(date) == VISITS[date]
    assert Counter(run.status for run in ledger.runs(job="visits_daily")) == {"done": 6}

    (command, output), = shown("Pruning generations", "swarm generations")
    night = "visits_daily@date=" + command.split("--date ")[1]
    listed = [night] + [f"  {g.run.id}  {g.run.status}  {g.kept or 'not read: may be pruned'}"
                        for g in generations.generations(job, ledger, night, generations.nights(job, ledger)[night])]
    assert listed == output
    assert generations.prune(job, ledger, tables) == {night: 10}  # its partials, and its staged rows
    assert not list(tables.scan("visits_partials", prefix=f"{night}/".encode()))
    assert published("2026-11-01") == VISITS["2026-11-01"]


def test_the_slices_example_runs_as_written_and_its_settings_are_the_config_s():
    title = "Long ranges: slices, and splitting the last ones"
    blocks = {lang: code for lang, code in FENCE.findall(subsection(title))}
    namespace: dict = {}
    exec(compile(blocks["python"], "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    slices = {key.rsplit(b"/", 1)[1].decode() for key, _ in namespace["tables"].scan("pages_partials")}
    assert any(":" in s for s in slices), slices  # the rest split in two, by a worker or the master
    split = tomllib.loads(blocks["toml"])["split"]
    assert split.keys() == config.DEFAULTS["split"].keys() and split["enabled"] is True

