"""The autoscaler's policy (a pure function) and its loop over a fake supervisord."""
from __future__ import annotations

import threading

import pytest

from swarm.autoscale import Autoscaler, Decision, Policy, decide, plan
from swarm.broker import stage_queue
from swarm.cli import EXIT_OK, EXIT_UNAVAILABLE, main
from swarm.errors import BackendError, ConfigError

POLICY = Policy(min=1, max=4, up_depth=100, down_idle_seconds=60.0)


def run(depths: list[int | None], running: int, policy: Policy = POLICY, every: float = 10.0) -> list[int]:
    """The worker count after each look, one look every ``every`` seconds, acting on each decision."""
    low_since, counts = None, []
    for i, depth in enumerate(depths):
        decision = decide(depth, running, low_since, i * every, policy)
        running, low_since = decision.target, decision.low_since
        counts.append(running)
    return counts


def test_a_backlog_adds_workers_at_once_up_to_max():
    assert decide(250, 1, None, 0.0, POLICY).target == 3  # ceil(250 / 100)
    assert decide(100_000, 1, None, 0.0, POLICY).target == 4
    assert decide(101, 1, None, 0.0, POLICY).target == 2
    assert decide(100, 1, None, 0.0, POLICY).target == 1  # exactly up_depth per worker is enough


def test_bounds_hold_whatever_the_queues_say():
    assert decide(0, 0, None, 0.0, POLICY).target == 1
    assert decide(None, 0, None, 0.0, POLICY).target == 1
    assert decide(10_000, 6, None, 0.0, POLICY).target == 4
    assert decide(None, 3, 5.0, 100.0, POLICY) == decide(None, 3, None, 100.0, POLICY)
    assert decide(None, 3, None, 100.0, POLICY).target == 3  # unknown depth: hold


@pytest.mark.parametrize("depth, running, says", [
    (0, 0, "0 running, target 1: below autoscale.min = 1"),
    (None, 0, "0 running, target 1: below autoscale.min = 1"),
    (1000, 0, "0 running, target 4: below autoscale.min = 1; 1000 waiting, more than 100 per worker"),
    (0, 6, "6 running, target 4: above autoscale.max = 4"),
    (250, 1, "1 running, target 3: 250 waiting, more than 100 per worker"),
    (150, 2, "2 running, target 2: steady"),
    (None, 2, "2 running, target 2: queue depth unknown: holding"),
    (0, 2, "2 running, target 2: 1 would do; waiting 60 s to be sure"),
])
def test_a_decision_states_the_running_count_the_target_and_why(depth, running, says):
    assert decide(depth, running, None, 0.0, POLICY).describe() == says


def test_scaling_down_waits_for_a_calm_spell_then_drains_one_at_a_time():
    # an empty queue, looked at every 10 s: one worker fewer per 60 s of calm
    counts = run([0] * 20, running=4)
    assert counts[:6] == [4] * 6
    assert counts[6:12] == [3] * 6
    assert counts[12:18] == [2] * 6
    assert counts[18:] == [1, 1]


def test_a_busy_spell_restarts_the_calm_clock():
    counts = run([0, 0, 0, 0, 0, 350, 0, 0, 0, 0, 0, 0, 0], running=4)
    assert counts[:12] == [4] * 12  # the spike at 50 s reset the clock
    assert counts[12] == 3


def test_a_queue_wobbling_around_a_threshold_does_not_flap():
    counts = run([250, 150] * 30, running=2)
    changes = sum(a != b for a, b in zip([2] + counts[:-1], counts, strict=True))
    assert changes == 1 and counts[-1] == 3


def test_settings_are_checked_naming_the_key():
    base = {"min": 1, "max": 4, "up_depth": 100, "down_idle_seconds": 300.0}
    assert Policy.from_config(base) == Policy(1, 4, 100, 300.0)
    for key, value in [("min", -1), ("max", 0), ("up_depth", 0)]:
        with pytest.raises(ConfigError, match=f"autoscale.{key}"):
            Policy.from_config(base | {key: value})
    with pytest.raises(ConfigError, match="autoscale.max"):
        Policy.from_config(base | {"min": 5})


def procs(**states: str) -> list[dict]:
    return [{"name": name, "group": "swarm-worker", "statename": state} for name, state in sorted(states.items())]


def test_plan_starts_idle_processes_and_drains_the_newest_first():
    table = procs(w00="RUNNING", w01="RUNNING", w02="STOPPED", w03="FATAL", w04="STOPPING")
    assert plan(table, 4) == (["w02", "w03"], [])
    assert plan(table, 1) == ([], ["w01"])
    starting = procs(w00="RUNNING", w01="RUNNING", w02="STARTING", w03="BACKOFF")
    assert plan(starting, 2) == ([], ["w03", "w02"])  # those not yet working go first
    assert plan(starting, 4) == ([], [])


class FakeSupervisor:
    group = "swarm-worker"

    def __init__(self, states: dict[str, str], down: bool = False):
        self.states, self.down = states, down
        self.started: list[str] = []
        self.stopped: list[str] = []

    def processes(self) -> list[dict]:
        if self.down:
            raise BackendError("supervisord at unix:///x.sock: no such file")
        return procs(**self.states)

    def start(self, names):
        self.started += names
        self.states.update({n: "RUNNING" for n in names})

    def stop(self, names):
        self.stopped += names
        self.states.update({n: "STOPPED" for n in names})


QUEUE = stage_queue("toy", "double")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scaler(broker, supervisor, clock=None, dry_run=False) -> Autoscaler:
    return Autoscaler(broker, [QUEUE], supervisor, Policy(1, 3, 10, 30.0), interval=5.0, dry_run=dry_run,
                      clock=clock or Clock())


def test_the_loop_declares_the_queues_and_acts_on_the_depth(broker):
    fleet = FakeSupervisor({"w00": "RUNNING", "w01": "STOPPED", "w02": "STOPPED"})
    clock = Clock()
    autoscaler = scaler(broker, fleet, clock)
    assert autoscaler.tick().target == 1  # the queue did not exist yet: declared, empty
    broker.publish([(QUEUE, b"x")] * 25)
    assert autoscaler.tick().target == 3
    assert fleet.started == ["w01", "w02"]
    broker.purge(QUEUE)
    for clock.now in (10.0, 45.0, 50.0, 85.0):
        autoscaler.tick()
    assert fleet.stopped == ["w02", "w01"]
    assert sorted(fleet.states.values()) == ["RUNNING", "STOPPED", "STOPPED"]


def test_retries_waiting_out_their_backoff_do_not_hold_workers(broker):
    fleet = FakeSupervisor({"w00": "RUNNING", "w01": "STOPPED"})
    broker.declare([QUEUE])
    broker.publish([(QUEUE, b"x")] * 25, delay=60)
    assert broker.depth(QUEUE) == 25
    decision = scaler(broker, fleet).tick()
    assert (decision.target, fleet.started) == (1, [])


def test_a_dry_run_changes_nothing(broker):
    fleet = FakeSupervisor({"w00": "RUNNING", "w01": "STOPPED"})
    broker.declare([QUEUE])
    broker.publish([(QUEUE, b"x")] * 25)
    assert scaler(broker, fleet, dry_run=True).tick().target == 3
    assert fleet.started == [] and fleet.states["w01"] == "STOPPED"


def test_a_broker_it_cannot_reach_still_keeps_the_minimum(broker, monkeypatch):
    fleet = FakeSupervisor({"w00": "STOPPED", "w01": "STOPPED"})

    def unreachable(queue, delayed=True):
        raise BackendError("RabbitMQ at amqp://x:***@mq:5672/: cannot connect")

    monkeypatch.setattr(broker, "depth", unreachable)
    decision = scaler(broker, fleet).tick()
    assert decision.describe() == "0 running, target 1: below autoscale.min = 1"
    assert fleet.started == ["w00"]


def test_supervisord_down_is_reported_and_the_loop_goes_on(broker):
    fleet = FakeSupervisor({}, down=True)
    stop = threading.Event()
    looks = []

    class Once(Autoscaler):
        def tick(self):
            looks.append(1)
            if len(looks) == 2:
                stop.set()
            return super().tick()

    Once(broker, [QUEUE], fleet, POLICY, interval=0.0).run(stop)
    assert len(looks) == 2


class FakeSupervisord:
    """supervisord's XML-RPC calls that the autoscaler makes, on a loopback port."""

    def __init__(self, states: dict[str, str]):
        from xmlrpc.server import SimpleXMLRPCServer

        self.states, self.calls = states, []
        self.server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
        for name in ("getAllProcessInfo", "startProcess", "stopProcess"):
            self.server.register_function(getattr(self, name), f"supervisor.{name}")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def getAllProcessInfo(self):  # noqa: N802 - supervisord's names
        return procs(**self.states)

    def startProcess(self, name, wait):  # noqa: N802
        self.calls.append(("start", name, wait))
        return True

    def stopProcess(self, name, wait):  # noqa: N802
        self.calls.append(("stop", name, wait))
        return True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def supervisord():
    fake = FakeSupervisord({"swarm-worker-00": "STOPPED", "swarm-worker-01": "STOPPED"})
    yield fake
    fake.close()


def test_the_command_looks_once_and_starts_the_minimum(tmp_path, supervisord, unique, capsys):
    path = tmp_path / "swarm.toml"
    path.write_text(f'[backends]\nbroker = "memory://as-{unique}"\n[worker]\njob = "merchant_daily"\n'
                    f'[autoscale]\nsupervisor_url = "{supervisord.url}"\nmin = 1\n')
    assert main(["--config", str(path), "autoscale", "--once", "--dry-run"]) == EXIT_OK
    assert supervisord.calls == []
    assert capsys.readouterr().out == ("swarm-worker: 0 running, target 1: below autoscale.min = 1 "
                                       "(dry run: nothing started or drained)\n")
    assert main(["--config", str(path), "autoscale", "--once"]) == EXIT_OK
    assert supervisord.calls == [("start", "swarm-worker:swarm-worker-00", False)]
    assert capsys.readouterr().out == "swarm-worker: 0 running, target 1: below autoscale.min = 1\n"


def test_a_supervisord_that_cannot_be_reached_is_named(tmp_path, capsys):
    path = tmp_path / "swarm.toml"
    path.write_text('[backends]\nbroker = "memory://"\n[worker]\njob = "merchant_daily"\n'
                    f'[autoscale]\nsupervisor_url = "unix://{tmp_path}/none.sock"\n')
    assert main(["--config", str(path), "autoscale", "--once"]) == EXIT_UNAVAILABLE
    assert f"supervisord at unix://{tmp_path}/none.sock" in capsys.readouterr().err


def test_workers_started_outside_it_are_drained_at_once_down_to_what_it_wanted_or_the_queue_needs():
    assert decide(0, 4, None, 0.0, POLICY, wanted=1) == Decision(1, None,
                                                               "3 started outside the autoscaler; 1 would do", 4)
    assert decide(250, 4, None, 0.0, POLICY, wanted=1).target == 3  # the queue needs three of them
    assert decide(0, 4, None, 0.0, POLICY, wanted=2).target == 2
    assert decide(0, 4, None, 0.0, POLICY, wanted=None).target == 4  # no look yet: it waits for a calm spell
    assert decide(None, 4, None, 0.0, POLICY, wanted=1).target == 4  # nor does it drain blind


def test_after_supervisorctl_restart_of_the_whole_group_it_drains_those_it_did_not_start(broker):
    fleet = FakeSupervisor({"w00": "STOPPED", "w01": "STOPPED", "w02": "STOPPED"})
    autoscaler = scaler(broker, fleet)
    assert autoscaler.tick().target == 1 and fleet.started == ["w00"]
    fleet.states.update(w01="RUNNING", w02="RUNNING")  # `supervisorctl restart swarm-worker:*` starts them all
    decision = autoscaler.tick()
    assert decision.target == 1 and fleet.stopped == ["w02", "w01"]
    assert autoscaler.tick().reason == "steady"
