"""Middleware sees each step of the message path, in order, and can never change a message's fate."""
from swarm.ledger import MessageState
from swarm.middleware import Middleware, Middlewares
from swarm.runtime import DONE, RETRY
from tests.unit.test_runtime import deliver, envelope, setup  # noqa: F401 - setup is a fixture

HOOKS = [name for name in vars(Middleware) if name.startswith(("before_", "after_", "on_"))]


class Recorder(Middleware):
    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        if name in HOOKS:
            return lambda *args: self.calls.append(name)
        return super().__getattribute__(name)


class Broken(Middleware):
    def __getattribute__(self, name):
        if name in HOOKS:
            def hook(*args):
                raise RuntimeError(f"broken {name}")
            return hook
        return super().__getattribute__(name)


def test_the_hooks_follow_one_message_along_the_path(setup):
    recorder = Recorder()
    outcome, _ = deliver(setup(middleware=Middlewares([recorder])), envelope(stage="double"))
    assert outcome == DONE
    assert recorder.calls == ["before_claim", "after_claim", "before_handler", "after_handler", "before_commit",
                              "after_publish", "after_settle", "after_commit"]


def test_a_fault_is_seen_as_a_retry(setup):
    recorder = Recorder()
    outcome, _ = deliver(setup({"1": "flaky"}, middleware=Middlewares([recorder])))
    assert outcome == RETRY
    assert recorder.calls == ["before_claim", "after_claim", "before_handler", "after_handler", "on_retry",
                              "after_settle"]


def test_a_middleware_that_raises_in_every_hook_changes_no_fate(setup, ledger, caplog):
    recorder = Recorder()
    env = envelope(stage="double")
    outcome, d = deliver(setup(middleware=Middlewares([Broken(), recorder])), env)
    assert outcome == DONE and d.acked == 1
    # the double done, its sink on its way
    assert ledger.counts(env.run) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
    assert len(recorder.calls) == 8  # the next middleware still sees every hook
    assert sum("middleware Broken failed" in r.getMessage() for r in caplog.records) == 8
