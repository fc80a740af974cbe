"""Declaring stages: sizes, batches and prefetch are checked when the job is declared."""
import pytest

from swarm import Job
from swarm.errors import PluginError


def declare(**sizes):
    job = Job("sizes")
    job.stage("s", **sizes)(lambda ctx, msg: None)
    return job.stages["s"]


def test_prefetch_defaults_to_a_full_batch_for_every_thread():
    assert declare().bound == 4
    assert declare(pool=4, batch=16).bound == 64
    assert declare(pool=4, batch=16, prefetch=10).bound == 10


@pytest.mark.parametrize("sizes, rule", [
    ({"pool": 0}, "pool >= 1"),
    ({"batch": 0}, "batch >= 1"),
    ({"pool": 2, "pool_min": 3}, "pool_min <= pool"),
    ({"pool_min": 0}, "1 <= pool_min"),
    ({"pool": 2, "batch": 2, "prefetch": 5}, "prefetch <= pool x batch"),
    ({"prefetch": 0}, "1 <= prefetch"),
    ({"max_queue": 0}, "max_queue must be a whole number >= 1"),
    ({"max_queue": 2.5}, "max_queue must be a whole number >= 1"),
    ({"max_queue": True}, "max_queue must be a whole number >= 1"),
])
def test_bad_sizes_are_refused_naming_the_stage_and_the_rule(sizes, rule):
    with pytest.raises(PluginError, match="stage s") as refused:
        declare(**sizes)
    assert rule in str(refused.value)


def test_a_stage_queue_is_bounded_by_its_own_max_queue_else_by_the_jobs_default():
    job = Job("bounds")
    job.stage("own", max_queue=50)(lambda ctx, msg: None)
    job.stage("plain")(lambda ctx, msg: None)
    assert (job.max_queue("own"), job.max_queue("plain")) == (50, None)
    job.default_max_queue = 1000  # jobs.max_queue
    assert (job.max_queue("own"), job.max_queue("plain")) == (50, 1000)
