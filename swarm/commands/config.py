"""``swarm config check``: each setting and where it came from, then each backend."""
from __future__ import annotations

import argparse

from swarm.config import Config
from swarm.errors import ConfigError
from swarm.exits import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    c = sub.add_parser("config", help="check the config: each setting and where it came from, then each backend "
                                      "(exit 0 all well, 2 a config problem, 75 a backend unreachable)")
    c.add_argument("action", choices=["check"])
    c.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (as before the command)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds each backend has to answer (default 10)")
    c.set_defaults(func=config_check)


def config_check(args: argparse.Namespace, cfg: Config) -> int:
    """The settings, then one line per backend; the exit code of the worst finding."""
    from swarm import check

    if args.timeout <= 0:
        raise ConfigError("config check: --timeout must be more than 0 seconds")
    print(f"config: {check.config_source(cfg)}")
    rows = [("setting", "value", "from"), *check.settings(cfg)]
    key_width, value_width = (min(60, max(len(row[i]) for row in rows)) for i in (0, 1))
    for key, value, source in rows:
        print(f"  {key:<{key_width}}  {value:<{value_width}}  {source}")
    findings = check.run_checks(cfg, args.timeout)
    print()
    for finding in findings:
        print(f"{finding.role:<9} {finding.status:<12} {finding.text}")
    worst = check.exit_status(findings)
    code = {check.OK: EXIT_OK, check.PROBLEM: EXIT_USAGE, check.UNREACHABLE: EXIT_UNAVAILABLE}[worst]
    print({check.OK: "all well", check.PROBLEM: f"a config problem (exit {code})",
           check.UNREACHABLE: f"a backend did not answer (exit {code})"}[worst])
    return code
