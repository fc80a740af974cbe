"""``swarm ctl``: steer a running fleet through the ledger (pause, resume, drain, reload, status).

The semantics are ``swarm.fleetcontrol``'s; this only checks what the
operator named against the job's declaration and says what will happen.
"""
from __future__ import annotations

import argparse
import getpass
import json
import socket
from typing import Any

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import ConfigError, PluginError
from swarm.exits import EXIT_OK
from swarm.report import when

ACTIONS = ("pause", "resume", "drain", "reload", "status")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    c = sub.add_parser(
        "ctl", help="steer the running fleet: pause|resume|drain JOB [STAGE], reload [JOB], status [JOB]",
        description="Controls go through the ledger: every worker of the fleet applies them within about a "
                    "second, and they stay in force across restarts until `ctl resume`.")
    c.add_argument("action", choices=ACTIONS, help="pause: a stage (or every stage of JOB) takes no new work; "
                   "resume: lift pauses and the drain; drain: JOB's masters publish no new work while the "
                   "workers finish what is queued; reload: every worker (of JOB) re-reads its config file; "
                   "status: what is in force")
    c.add_argument("job", nargs="?", help="the job (status and reload: every job when left out)")
    c.add_argument("stage", nargs="?", help="pause, resume: one stage (default: every stage of JOB)")
    c.add_argument("--reason", default="", help="why, shown with the control by `ctl status` and `swarm status`")
    c.add_argument("--json", action="store_true", help="status: as JSON")
    c.set_defaults(func=ctl)


def ctl(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.ledger import EVERY_STAGE, FLEET, ControlState

    ledger = kit.ledger(cfg)
    if args.action == "status":
        return _status(args, cfg, ledger)
    if args.action == "reload":
        if args.stage:
            raise ConfigError("ctl reload: a reload is of every worker, or of every worker of one JOB; no STAGE")
        job = _job(cfg, ledger, args.job).name if args.job else FLEET
        control = ledger.set_control(job, EVERY_STAGE, ControlState.RELOAD, _issuer(), args.reason)
        whom = f"every worker of {job}" if job else "every worker of the fleet"
        print(f"reload {control.generation} asked of {whom}: each re-reads its config file within about a second "
              "and logs the settings it applied and those that need a restart")
        return EXIT_OK
    if not args.job:
        raise ConfigError(f"ctl {args.action}: name the JOB")
    if args.action == "resume":
        return _resume(args, cfg, ledger)
    job = _job(cfg, ledger, args.job)
    if args.action == "drain":
        if args.stage:
            raise ConfigError(f"ctl drain: a drain is of a whole job (its masters publish no new work); to stop "
                              f"one stage taking work, `swarm ctl pause {job.name} {args.stage}`")
        ledger.set_control(job.name, EVERY_STAGE, ControlState.DRAINING, _issuer(), args.reason)
        print(f"{job.name}: draining: its masters publish no new work and plan no next phase; the workers finish "
              f"what is queued. `swarm ctl status {job.name}` says drained once nothing is queued or claimed; "
              f"`swarm ctl resume {job.name}` lifts it")
        return EXIT_OK
    stage = _stage(job, args.stage)
    ledger.set_control(job.name, stage, ControlState.PAUSED, _issuer(), args.reason)
    what = f"stage {stage}" if stage else "every stage"
    print(f"{job.name}: {what} paused: within about a second every worker takes no new work of it and finishes "
          f"what it holds; its messages wait on the broker. `swarm ctl resume {job.name}"
          f"{' ' + stage if stage else ''}` lifts it")
    return EXIT_OK


def _resume(args: argparse.Namespace, cfg: Config, ledger: Any) -> int:
    from swarm.ledger import EVERY_STAGE, ControlState

    in_force = [c for c in ledger.controls(args.job) if c.job == args.job]
    name = args.job
    if not in_force or args.stage:  # a job whose controls are in force can be resumed even from a host without it
        job = _job(cfg, ledger, args.job)
        name = job.name
        _stage(job, args.stage)
    if args.stage:
        lifted = ledger.lift_controls(name, args.stage, (ControlState.PAUSED,))
    else:
        lifted = ledger.lift_controls(name)
    if not lifted:
        print(f"{name}{' stage ' + args.stage if args.stage else ''}: nothing was paused or draining")
    for control in lifted:
        what = "drain" if control.state == ControlState.DRAINING else (
            f"pause of stage {control.stage}" if control.stage else "pause of every stage")
        print(f"{name}: {what} lifted (it was put by {control.issued_by} at {when(control.updated_at)})")
    whole = [c for c in ledger.controls(name) if c.job == name and c.state == ControlState.PAUSED
             and c.stage == EVERY_STAGE]
    if args.stage and whole:
        print(f"{name}: stage {args.stage} stays paused: every stage of {name} is paused; "
              f"`swarm ctl resume {name}` lifts that")
    return EXIT_OK


def _status(args: argparse.Namespace, cfg: Config, ledger: Any) -> int:
    from swarm.fleetcontrol import summary
    from swarm.ledger import FLEET, ControlState

    controls = ledger.controls(args.job)
    jobs = [args.job] if args.job else sorted({c.job for c in controls if c.job != FLEET})
    if args.job:
        _job(cfg, ledger, args.job, lenient=True)
    docs = [summary(ledger, job) for job in jobs]
    reloads = {c.job or "*": {"generation": c.generation, "by": c.issued_by, "at": c.updated_at}
               for c in controls if c.state == ControlState.RELOAD}
    if args.json:
        print(json.dumps({"jobs": docs, "reloads": reloads}, indent=2))
        return EXIT_OK
    lines = []
    for doc in docs:
        for stage, info in sorted(doc["paused"].items()):
            what = "every stage" if stage == "*" else f"stage {stage}"
            lines.append(f"{doc['job']}: {what} paused {_since(info)}")
        if doc["drain"] is not None:
            drain = doc["drain"]
            state = "drained: nothing queued or claimed" if drain["drained"] else (
                f"draining: {drain['open']} message(s) still queued or claimed")
            lines.append(f"{doc['job']}: {state} {_since(drain)}")
    for job, info in sorted(reloads.items()):
        whom = "the fleet" if job == "*" else job
        lines.append(f"reload of {whom}: generation {info['generation']}, last asked by {info['by']} "
                     f"at {when(info['at'])}")
    if not any(doc["paused"] or doc["drain"] for doc in docs):
        lines.insert(0, f"{args.job or 'no job'}: nothing paused or draining")
    print("\n".join(lines))
    return EXIT_OK


def _job(cfg: Config, ledger: Any, name: str, lenient: bool = False) -> Any:
    """The job ``name`` as this host loads it; a clear refusal when there is no such job."""
    try:
        return kit.job(cfg, name)
    except PluginError:
        if lenient and (ledger.controls(name) or name in ledger.jobs()):
            return None
        raise


def _stage(job: Any, stage: str | None) -> str:
    """``stage`` if ``job`` has it (every stage, ``""``, when None); a refusal naming its stages otherwise."""
    if not stage:
        return ""
    if stage not in job.stages:
        raise ConfigError(f"job {job.name} has no stage {stage!r}; its stages: {', '.join(job.stages)}")
    return str(stage)


def _issuer() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _since(info: dict) -> str:
    why = f": {info['reason']}" if info.get("reason") else ""
    return f"(by {info['by']} at {when(info['at'])}{why})"


