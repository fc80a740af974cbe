"""``swarm demo``: the whole nightly job, generated data to summary, on one machine."""
from __future__ import annotations

import datetime
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarm.backends import open_broker, open_ledger, open_tables, redact
from swarm.progress import ProgressReport
from swarm.signing import SiteKeys, for_site


def run_demo(args) -> int:
    """Generate a day of events, run master and workers, print what happened; 0 if the summary is exact."""
    from master.coordinator import Master, MasterSettings
    from workers.jobs import merchant_daily as md

    console = Console()
    data_dir = Path(args.data or tempfile.mkdtemp(prefix="swarm-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    urls = {
        "broker": args.broker or f"memory://demo-{os.getpid()}",
        "ledger": args.ledger or f"sqlite:///{data_dir.resolve()}/ledger.db",
        "tables": args.tables or f"embedded:///{data_dir.resolve()}/tables.db",
    }
    date = args.date or (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    console.print(f"[bold]Swarm demo[/]: merchant_daily for {date}, {args.events:,} events, "
                  f"{args.merchants} merchants, {args.workers} workers")
    for role, url in urls.items():
        console.print(f"  {role:<7} {redact(url)}")

    tables, ledger = open_tables(urls["tables"]), open_ledger(urls["ledger"])
    ledger.init_schema()
    started = time.monotonic()
    md.create_tables(tables, date)
    md.generate(tables, date, args.events, merchants=args.merchants, seed=args.seed)
    console.print(f"generated {args.events:,} events in {time.monotonic() - started:.1f}s")

    options = {"chunks": args.chunks}
    params = {"date": date}
    run_id = f"{md.job.run_id(params)}#demo-{int(time.time())}"
    settings = MasterSettings(poll=0.2, options=options)
    progress = ProgressReport(interval=2.0)
    started = time.monotonic()
    key_file = _site_key(data_dir)
    keys = for_site({"key_file": str(key_file)}, urls["broker"])
    with _fleet(md.job, urls, ledger, tables, args.workers, options, key_file, keys):
        master_broker = open_broker(urls["broker"], serve=False)
        run = Master(md.job, params, master_broker, ledger, tables, settings, progress, run_id, keys=keys).run()
    progress.close()
    elapsed = time.monotonic() - started
    return _report(console, md, run, ledger, tables, date, elapsed)


def _site_key(data_dir: Path) -> Path:
    """The demo's own site key, in its data directory: the master and its worker processes sign with it."""
    path = data_dir / "site.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path


def _fleet(job, urls, ledger, tables, workers: int, options: dict, key_file: Path, keys: SiteKeys):
    """Worker threads on the in-process broker; worker processes on a real one."""
    if urls["broker"].startswith("memory://"):
        from swarm.local import local_fleet

        return local_fleet(job, lambda: open_broker(urls["broker"]), ledger, tables, workers, options=options,
                           keys=keys)
    return _process_fleet(job.name, urls, workers, key_file)


class _process_fleet:
    """``swarm worker`` as separate OS processes, stopped with SIGTERM (they drain) on exit."""

    def __init__(self, job: str, urls: dict, workers: int, key_file: Path):
        env = dict(os.environ)
        env.update({f"SWARM_BACKENDS_{k.upper()}": v for k, v in urls.items()})
        # the URLs are complete: a password file named by a swarm.toml here must not add a second password
        env.update({f"SWARM_BACKENDS_{k.upper()}_PASSWORD_FILE": "" for k in ("broker", "ledger")})
        env["SWARM_WORKER_JOB"] = job
        env.pop("SWARM_SECURITY_KEY", None)
        env["SWARM_SECURITY_KEY_FILE"] = str(key_file.resolve())
        cmd = [sys.executable, "-m", "swarm.cli", "worker"]
        self.procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]

    def __enter__(self):
        return self.procs

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _report(console: Console, md, run, ledger, tables, date: str, elapsed: float) -> int:
    counters = ledger.counters(run.id)
    chunks = ledger.chunk_counts(run.id)
    written = md.summary(tables, date)
    expected = md.reference(tables, date)
    exact = written == expected
    console.print(
        f"\nrun [bold]{run.id}[/] {run.status} in {elapsed:.1f}s: {counters.get('rows', 0):,} rows "
        f"({counters.get('rows', 0) / max(elapsed, 1e-9):,.0f} rows/s), "
        f"{sum(chunks.get('map', {}).values())} map messages, {sum(chunks.get('reduce', {}).values())} reduce messages"
    )
    if run.error:
        console.print(f"[red]error:[/] {run.error}")
    top = sorted(written.items(), key=lambda kv: -int(kv[1][b"s:revenue"]))[:5]
    table = Table("merchant", "orders", "revenue", "customers", "conversion", title="top merchants by revenue")
    for key, cells in top:
        table.add_row(
            key.decode().split("/", 1)[1], cells[b"s:orders"].decode(),
            f"{int(cells[b's:revenue']) / 100:,.2f}", cells[b"s:customers"].decode(), cells[b"s:conversion"].decode(),
        )
    console.print(table)
    verdict = "[green]matches[/]" if exact else "[red]DIFFERS FROM[/]"
    console.print(f"summary of {len(written)} merchants {verdict} the single-process reference "
                  f"({len(expected)} merchants)")
    return 0 if exact and run.status == "done" else 1
