"""The ``swarm`` command as an operator types it."""
import json
import logging

import pytest

from swarm import logsetup
from swarm.backends import open_broker, open_ledger, open_tables
from swarm.brokers.rabbitmq import RabbitBroker
from swarm.cli import EXIT_LOCKED, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE, main
from swarm.errors import BackendError
from swarm.local import local_fleet
from workers.jobs import merchant_daily as md

DATE = "2026-11-22"


@pytest.fixture
def site(tmp_path, monkeypatch, unique):
    """A config on embedded backends, a generated day, and worker threads on the same in-process broker."""
    urls = {"broker": f"memory://cli-{unique}", "ledger": f"sqlite:///{tmp_path}/ledger.db",
            "tables": f"embedded:///{tmp_path}/tables.db"}
    (tmp_path / "swarm.toml").write_text(
        "[backends]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items()) + "[master]\npoll = 0.05\n"
        "[options.merchant_daily]\nchunks = 16\n"
    )
    monkeypatch.chdir(tmp_path)
    tables, ledger = open_tables(urls["tables"]), open_ledger(urls["ledger"])
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 1500, merchants=12)
    yield ledger, tables


def test_a_job_runs_in_one_process_then_history_and_status_show_it(site, capsys):
    ledger, tables = site
    assert main(["run", "merchant_daily", "--date", DATE, "--workers", "3"]) == EXIT_OK
    assert f"merchant_daily@date={DATE}: done" in capsys.readouterr().out
    assert md.summary(tables, DATE) == md.reference(tables, DATE)

    assert main(["runs", "--json", "--job", "merchant_daily"]) == EXIT_OK
    [run] = json.loads(capsys.readouterr().out)
    assert (run["id"], run["status"], run["params"]) == (f"merchant_daily@date={DATE}", "done", {"date": DATE})

    assert main(["status", run["id"], "--json"]) == EXIT_OK
    status = json.loads(capsys.readouterr().out)
    assert status["messages"]["map"] == {"done": 16} and status["counters"]["rows"] == 1500
    assert status["stages"]["scan"]["queue"] == "swarm.merchant_daily.scan"
    assert status["stages"]["scan"]["depth"] == 0 and status["stages"]["scan"]["rate_per_s"] > 0


def test_a_second_master_refuses_naming_the_first(site, capsys):
    ledger, _ = site
    ledger.lock_master(f"merchant_daily@date={DATE}", "cron on host-a")
    assert main(["run", "merchant_daily", "--date", DATE]) == EXIT_LOCKED
    err = capsys.readouterr().err
    assert "another master already runs merchant_daily@date=2026-11-22" in err and "cron on host-a" in err


def test_unknown_job_and_missing_param_are_usage_errors(site, capsys):
    assert main(["run", "no_such_job", "--date", DATE]) == EXIT_USAGE
    assert "no job named 'no_such_job'" in capsys.readouterr().err
    assert main(["run", "merchant_daily"]) == EXIT_USAGE
    assert "missing ['date']" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["master", "merchant_daily", "--date", DATE], ["worker", "--job", "merchant_daily"]])
def test_master_and_worker_refuse_the_in_process_broker_and_point_to_run(site, capsys, argv):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "an in-process broker lives and dies with one process" in err and "swarm run JOB --date D" in err


def test_demo_runs_and_checks_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--events", "2000", "--merchants", "15", "--data", str(tmp_path / "d")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "matches the single-process reference" in out and "top merchants by revenue" in out


def test_rerun_from_the_command_line(site, capsys):
    ledger, tables = site
    assert main(["run", "merchant_daily", "--date", DATE]) == EXIT_OK
    assert main(["rerun", "merchant_daily", "--dates", DATE, "--from-stage", "reduce", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "phase reduce: all its stages; 16 chunk(s)" in out
    assert ledger.get_run(f"merchant_daily@date={DATE}+r1") is None
    assert f"phase map: not run; its output is read from merchant_daily@date={DATE}\n" in out
    assert main(["rerun", "merchant_daily", "--date", DATE, "--from-stage", "reduce"]) == EXIT_OK
    assert f"merchant_daily@date={DATE}+r1: done" in capsys.readouterr().out
    assert md.summary(tables, DATE) == md.reference(tables, DATE)
    assert main(["rerun", "merchant_daily", "--dates", "2026-11-01", "--from-stage", "reduce"]) == EXIT_USAGE
    assert "has never run" in capsys.readouterr().err
    assert main(["rerun", "merchant_daily", "--param", "day=1", "--from-stage", "reduce"]) == EXIT_USAGE
    assert "job merchant_daily takes params ['date']; missing ['date'], unexpected ['day']" in capsys.readouterr().err
    ledger.lock_master(f"merchant_daily@date={DATE}", "cron on host-a")
    assert main(["rerun", "merchant_daily", "--dates", DATE, "--from-stage", "reduce"]) == EXIT_LOCKED
    assert "rerun refused: merchant_daily@date=2026-11-22 is being run right now by" in capsys.readouterr().err


def test_an_unexpected_error_exits_70_with_its_traceback_never_1(site, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("planner bug")

    monkeypatch.setattr(md.job, "verify", broken)
    assert main(["master", "merchant_daily", "--date", DATE]) == EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'planner bug'" in err
    assert err.endswith("swarm: unexpected error (traceback above); exit 70\n")


READ_ONLY = [["runs"], ["status", f"merchant_daily@date={DATE}"], ["dlq", "list"], ["dlq", "show", "1"]]


@pytest.mark.parametrize("argv", READ_ONLY)
def test_read_only_commands_never_create_the_default_ledger(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"swarm: no ledger found at {tmp_path}/swarm.db; backends.ledger is sqlite:///swarm.db, the default: no "
        f"config file was read (no --config, and no swarm.toml in {tmp_path}). `swarm db init` creates a ledger\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", READ_ONLY)
def test_read_only_commands_name_the_config_that_points_at_no_ledger(tmp_path, monkeypatch, capsys, argv):
    config = tmp_path / "site.toml"
    config.write_text(f'[backends]\nledger = "sqlite:///{tmp_path}/gone.db"\n')
    assert main(["--config", str(config), *argv]) == EXIT_USAGE
    assert (f"no ledger found at {tmp_path}/gone.db; backends.ledger is sqlite:///{tmp_path}/gone.db, "
            f"set in {config}.") in capsys.readouterr().err
    monkeypatch.setenv("SWARM_BACKENDS_LEDGER", f"sqlite:///{tmp_path}/env.db")
    assert main(["--config", str(config), *argv]) == EXIT_USAGE
    assert f"set by SWARM_BACKENDS_LEDGER (config file {config})" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]


def test_a_file_that_holds_no_ledger_is_not_made_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "swarm.db").write_bytes(b"")
    assert main(["runs"]) == EXIT_USAGE
    assert f"no ledger found at {tmp_path}/swarm.db: the file has no Swarm schema;" in capsys.readouterr().err


def test_db_init_creates_the_ledger_that_read_only_commands_then_use(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["db", "init"]) == EXIT_OK
    assert (tmp_path / "swarm.db").is_file()
    assert main(["runs", "--json"]) == EXIT_OK
    assert "[]" in capsys.readouterr().out


def test_dlq_list_show_and_replay(tmp_path, monkeypatch, capsys, unique):
    from swarm.brokers.memory import MemoryBroker, hub
    from swarm.envelope import Envelope, encode
    from swarm.signing import process_keys

    url = f"memory://dlq-{unique}"
    (tmp_path / "swarm.toml").write_text(f'[backends]\nbroker = "{url}"\nledger = "sqlite:///{tmp_path}/l.db"\n')
    monkeypatch.chdir(tmp_path)
    open_ledger(f"sqlite:///{tmp_path}/l.db").close()  # the dead letters' run made it
    broker = MemoryBroker(hub(url.split("://")[1]))
    queue = "swarm.merchant_daily.reduce"
    broker.declare([queue])
    env = Envelope("merchant_daily", f"merchant_daily@date={DATE}", "reduce", "reduce", "b01", payload={"bucket": 1})
    broker.dead_letter(queue, encode(env, process_keys()), "failed 5 times; last error: KeyError")
    broker.dead_letter(queue, b"\xc1junk", "body is not valid msgpack")

    assert main(["dlq", "list", "--job", "merchant_daily", "--json"]) == EXIT_OK
    letters = json.loads(capsys.readouterr().out)
    assert [(d["message_id"], d["reason"]) for d in letters] == [
        (env.id, "failed 5 times; last error: KeyError"), (None, "body is not valid msgpack")]
    assert main(["dlq", "show", str(letters[0]["id"])]) == EXIT_OK
    out = capsys.readouterr().out
    assert "KeyError" in out and "decoded, UNVERIFIED" in out and "  payload: {'bucket': 1}" in out
    assert main(["dlq", "show", str(letters[0]["id"]), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["envelope"]["payload"] == {"bucket": 1}
    assert main(["dlq", "replay", str(letters[0]["id"])]) == EXIT_OK
    out = capsys.readouterr().out
    assert "replayed 1 dead letter(s)" in out and "`swarm run JOB --date D` sends them" in out
    assert broker.depth(queue) == 0  # the in-process broker keeps nothing between commands: the next run sends it
    assert main(["dlq", "list", "--json"]) == EXIT_OK
    assert [d["message_id"] for d in json.loads(capsys.readouterr().out)] == [None]


def test_dlq_show_with_a_job_gathers_its_letters_first(tmp_path, monkeypatch, capsys, unique):
    from swarm.brokers.memory import MemoryBroker, hub

    url = f"memory://dlq-show-{unique}"
    (tmp_path / "swarm.toml").write_text(f'[backends]\nbroker = "{url}"\nledger = "sqlite:///{tmp_path}/l.db"\n')
    monkeypatch.chdir(tmp_path)
    open_ledger(f"sqlite:///{tmp_path}/l.db").close()
    broker = MemoryBroker(hub(url.split("://")[1]))
    queue = "swarm.merchant_daily.reduce"
    broker.declare([queue])
    broker.dead_letter(queue, b"\xc1junk", "body is not valid msgpack")

    assert main(["dlq", "show", "1", "--job", "merchant_daily", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["reason"] == "body is not valid msgpack"


@pytest.fixture
def logger_levels():
    """Put back the logger levels ``setup_logging`` sets, so other tests see pika as before."""
    names = ["pika", *logsetup.PIKA_CONNECT_LOGGERS]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_broker_that_refuses_the_connection_is_one_clear_error_not_pikas_seven(caplog, logger_levels):
    logsetup.setup_logging("INFO")
    broker = RabbitBroker("amqp://guest:s3cret@127.0.0.1:1/%2F")  # nothing listens on port 1
    with pytest.raises(BackendError) as err:
        broker.declare(["q"])
    assert "cannot connect" in str(err.value) and "s3cret" not in str(err.value)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.ERROR] == []


def test_db_prune_deletes_old_finished_runs_and_says_what(site, capsys):
    ledger, _ = site
    assert main(["run", "merchant_daily", "--date", DATE]) == EXIT_OK
    run = f"merchant_daily@date={DATE}"
    assert main(["db", "prune", "--older-than", "1"]) == EXIT_OK  # finished just now: kept
    assert "deleted 0 run(s)" in capsys.readouterr().out and ledger.get_run(run) is not None
    assert main(["db", "prune", "--older-than", "0", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "would delete 1 run(s)" in out and run in out and ledger.get_run(run) is not None
    assert main(["db", "prune", "--older-than", "0"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "deleted 1 run(s)" in out and f"{run}  (its night is published: its run row stays)" in out
    assert ledger.counts(run) == {}  # its messages are gone
    assert ledger.get_run(run).status == "done" and ledger.checks(run)  # what readers and the history go by
    assert ledger.counters(run)["merchants"] > 0
    assert main(["db", "prune"]) == EXIT_USAGE
    assert "--older-than DAYS is required" in capsys.readouterr().err


def test_master_and_worker_refuse_a_shared_broker_without_a_site_key(tmp_path, monkeypatch, capsys):
    (tmp_path / "swarm.toml").write_text('[backends]\nbroker = "amqp://guest:guest@127.0.0.1:1/%2F"\n')
    monkeypatch.chdir(tmp_path)
    for argv in (["master", "merchant_daily", "--date", DATE], ["worker", "--job", "merchant_daily"]):
        assert main(argv) == EXIT_USAGE
        assert "a shared broker needs the site key" in capsys.readouterr().err


def test_a_failed_one_process_run_keeps_its_dead_letters_and_resumes_after_a_replay(tmp_path, monkeypatch, capsys):
    def configure(behaviour: str) -> None:
        (tmp_path / "swarm.toml").write_text(
            f'[backends]\nledger = "sqlite:///{tmp_path}/l.db"\ntables = "embedded:///{tmp_path}/t.db"\n'
            '[jobs]\nmodules = ["tests.unit.toyjob"]\n[master]\npoll = 0.05\n'
            f'[options.toy]\ncount = 3\nbehaviour = {{ {behaviour} }}\n')

    monkeypatch.chdir(tmp_path)
    tables = open_tables(f"embedded:///{tmp_path}/t.db")
    tables.create_table("out", ["f"])
    tables.close()
    configure('"2" = "crash"')
    assert main(["run", "toy", "--date", DATE]) == 1
    assert "1 dead-lettered" in capsys.readouterr().out
    assert main(["dlq", "list", "--json"]) == EXIT_OK  # kept in the ledger: the broker went with the process
    [letter] = json.loads(capsys.readouterr().out)
    assert "ValueError: boom on 2" in letter["reason"]
    configure("")  # the cause is fixed
    assert main(["dlq", "replay", "--all"]) == EXIT_OK
    capsys.readouterr()
    assert main(["run", "toy", "--date", DATE]) == EXIT_OK
    assert f"toy@date={DATE}: done" in capsys.readouterr().out


def test_runs_cancel_ends_a_stuck_run_refuses_while_a_master_holds_it_and_workers_drop_its_work(site, capsys):
    from swarm.envelope import Envelope, encode
    from swarm.ledger import Message
    from swarm.runtime import SKIPPED, Processor
    from swarm.signing import process_keys
    from tests.unit.test_runtime import FakeDelivery

    ledger, tables = site
    run = f"merchant_daily@date={DATE}"
    ledger.open_run(run, "merchant_daily", {"date": DATE})  # as a master that failed at start leaves it
    env = Envelope("merchant_daily", run, "reduce", "reduce", "b00", payload={"bucket": 0})
    body = encode(env, process_keys())
    ledger.save_plan(run, "reduce", [Message(env.id, "reduce", "b00", body)])
    ledger.lock_master(run, "cron on host-a")
    assert main(["runs", "cancel", run, "--reason", "bad input data"]) == EXIT_LOCKED
    assert "cron on host-a" in capsys.readouterr().err and ledger.get_run(run).status == "running"
    ledger.unlock_master(run)
    assert main(["runs", "cancel", run]) == EXIT_USAGE  # no reason given
    assert main(["runs", "cancel", run, "--reason", "bad input data"]) == EXIT_OK
    assert ledger.get_run(run).error == "cancelled: bad input data"
    capsys.readouterr()
    assert main(["runs", "--status", "cancelled", "--json"]) == EXIT_OK
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [run]
    worker = Processor(md.job, open_broker(f"memory://cancel-{id(ledger)}"), ledger, tables, "w1")
    delivery = FakeDelivery("swarm.merchant_daily.reduce", body)
    assert worker.handle(delivery) == SKIPPED and delivery.acked == 1  # dropped, not dead-lettered


def test_a_master_stops_when_its_run_is_cancelled_under_it(site, capsys):
    import threading

    from swarm.housekeeping import cancel
    from swarm.testing import run_job

    ledger, tables = site
    run = f"merchant_daily@date={DATE}"
    result = {}
    # No worker: the master watches its first phase until the run is cancelled under it.
    thread = threading.Thread(target=lambda: result.update(
        run=run_job(md.job, {"date": DATE}, tables, ledger, workers=0, options={"chunks": 4})))
    thread.start()
    import time

    deadline = time.monotonic() + 30
    while (ledger.get_run(run) is None or not ledger.counts(run)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancel(ledger, run, "operator said so", force=True).status == "cancelled"
    thread.join(30)
    assert result["run"].status == "cancelled" and result["run"].error == "cancelled: operator said so"


@pytest.fixture
def shared_memory_broker(tmp_path, monkeypatch, unique):
    """A config whose in-process broker stands in for a shared one: its queues outlive a command."""
    from swarm.brokers.memory import MemoryBroker, hub

    url = f"memory://dlq-all-{unique}"
    (tmp_path / "swarm.toml").write_text(f'[backends]\nbroker = "{url}"\nledger = "sqlite:///{tmp_path}/l.db"\n'
                                         '[jobs]\nmodules = ["tests.unit.toyjob"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(MemoryBroker, "outlives_process", True)
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.db")
    for job in ("merchant_daily", "toy", "retired_job"):
        ledger.open_run(f"{job}@date={DATE}", job, {"date": DATE})
    broker = MemoryBroker(hub(url.split("://")[1]))
    for queue in ("swarm.merchant_daily.reduce", "swarm.toy.sink", "swarm.retired_job.scan"):
        broker.declare([queue])
        broker.dead_letter(queue, b"\xc1", f"dead on {queue}")
    yield ledger, broker
    ledger.close()


def test_dlq_list_without_a_job_gathers_every_job_the_ledger_has_runs_of(shared_memory_broker, capsys):
    assert main(["dlq", "list", "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert sorted(d["reason"] for d in json.loads(captured.out)) == [
        "dead on swarm.merchant_daily.reduce", "dead on swarm.toy.sink"]
    assert "warning: not gathering the dead letters of job 'retired_job': cannot load it (no job named" \
        in captured.err
    _, broker = shared_memory_broker
    assert broker.depth("swarm.retired_job.scan.dlq") == 1  # left where it was


def test_dlq_list_lists_what_the_ledger_has_when_the_broker_cannot_be_read(shared_memory_broker, capsys,
                                                                           monkeypatch):
    from swarm.brokers.memory import MemoryBroker
    from swarm.cli import EXIT_UNAVAILABLE

    ledger, _ = shared_memory_broker
    ledger.add_dead_letter("swarm.toy.double", "gathered earlier", b"x", None)

    def down(self, queue, store, limit=1000):
        raise BackendError("RabbitMQ at amqp://mq1/: cannot connect")

    monkeypatch.setattr(MemoryBroker, "take_dead", down)
    assert main(["dlq", "list", "--json"]) == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert [d["reason"] for d in json.loads(captured.out)] == ["gathered earlier"]
    assert "warning: cannot gather dead letters (RabbitMQ at amqp://mq1/: cannot connect)" in captured.err
