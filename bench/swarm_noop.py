"""Case 2: the no-op job ``noop_pipeline`` (a -> b) through real ``swarm worker`` processes, ledger on.

The master plans and publishes the chunks first, with no worker running; then
the workers start and the clock is the ledger's: every message's row gets
``updated_at = now`` in ``complete``, just before its ack, so the done times
of all messages (both stages) give the steady-state rate. The workers run
under ``bench.probe`` for the handler-to-ack latency.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bench import amqp
from bench.measure import CpuMeter, Throughput, peak_rss_mib, percentile, pids_named, steady_rate
from bench.site import case_config
from swarm.broker import stage_queue
from swarm.ledger import MessageState, PhaseState
from tests.support.site import Site
from tests.support.waiting import wait_until
from workers.jobs.noop_pipeline import job as noop_job

JOB = "noop_pipeline"
QUEUES = [stage_queue(JOB, "a"), stage_queue(JOB, "b")]


def prefetch() -> int:
    """What each of the job's stage consumers prefetches (its pool size)."""
    return noop_job.stages["a"].bound


def run_id(date: str) -> str:
    return f"{JOB}@date={date}"


def publish_planned(site: Site, config: Path, date: str, timeout: float = 600) -> tuple[subprocess.Popen, float]:
    """Start the master with no worker; return it and the seconds until the phase was published."""
    ledger = site.ledger()
    started = time.monotonic()
    master = site.swarm(config, "master", JOB, "--date", date)
    try:
        wait_until(lambda: master.poll() is not None
                   or ledger.phase_state(run_id(date), "main") == PhaseState.PUBLISHED,
                   "the master to publish", timeout, every=0.02)
    finally:
        ledger.close()
    if master.poll() is not None:
        raise RuntimeError(f"the master exited with {master.returncode}:\n{site.log_tail(master)}")
    return master, time.monotonic() - started


def start_workers(site: Site, config: Path, procs: int, trace_dir: Path | None = None) -> list[subprocess.Popen]:
    """``procs`` worker processes, subscribed to both stages when this returns."""
    env, module = None, "swarm.cli"
    if trace_dir is not None:
        trace_dir.mkdir(exist_ok=True)
        env, module = {"BENCH_TRACE_DIR": str(trace_dir)}, "bench.probe"
    workers = [site.swarm(config, "worker", "--job", JOB, module=module, env=env) for _ in range(procs)]
    amqp.wait_consumers(site.amqp, QUEUES, procs)
    return workers


def done_times(site: Site, run: str) -> list[float]:
    rows = site.query("SELECT updated_at FROM swarm_messages WHERE run_id = %s AND state = %s",
                      (run, MessageState.DONE))
    return [float(t) for (t,) in rows]


def latencies(trace_dir: Path) -> dict[str, list[float]]:
    """Handler return to ack written, in ms, by stage."""
    out: dict[str, list[float]] = {}
    for path in trace_dir.glob("*.json"):
        for msg_id, (returned, acked) in json.loads(path.read_text()).items():
            out.setdefault(msg_id.split("/")[-2], []).append((acked - returned) * 1000)
    return out


def run(site: Site, chunks: int, procs: int, date: str) -> dict:
    """One run of ``chunks`` chunks (2 messages each) on ``procs`` workers."""
    # window 0: the master publishes the whole phase before the workers start (see the module's docstring)
    config = case_config(site, f"noop-{procs}", {JOB: {"chunks": chunks}}, master={"window": 0})
    master, publish_seconds = publish_planned(site, config, date)
    trace_dir = site.tmp / f"trace-{procs}"
    workers = start_workers(site, config, procs, trace_dir)
    groups = {"workers": [w.pid for w in workers], "rabbitmq": pids_named("beam.smp"),
              "mariadb": pids_named("mariadbd")}  # not the master: it has exited when the meter reads
    try:
        with CpuMeter(groups) as cpu:
            master.wait(timeout=600)
    except subprocess.TimeoutExpired:
        master.kill()
        raise RuntimeError(f"the noop run did not finish:\n{site.log_tail(workers[0])}") from None
    if master.returncode != 0:
        raise RuntimeError(f"the master exited with {master.returncode}:\n{site.log_tail(master)}")
    peak = max(peak_rss_mib(w.pid) for w in workers)
    site.stop(workers)
    throughput: Throughput = steady_rate(done_times(site, run_id(date)), procs=procs)
    by_stage = latencies(trace_dir)
    every = [ms for values in by_stage.values() for ms in values]
    return throughput.as_dict() | {
        "chunks": chunks,
        "publish_seconds": publish_seconds,
        "latency_ms": {"p50": percentile(every, 0.5), "p99": percentile(every, 0.99), "samples": len(every)},
        "latency_ms_by_stage": {s: {"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
                                for s, v in sorted(by_stage.items())},
        "peak_rss_mib": peak,
        "cores": cpu.cores,  # from the workers' start to the run done
    }
