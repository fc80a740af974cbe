"""What commands share: loading the job the config names, with the site's defaults applied."""
from swarm import config
from swarm.broker import queue_bounds
from swarm.commands import kit


def test_the_sites_max_queue_bounds_every_stage_that_sets_none(tmp_path):
    path = tmp_path / "swarm.toml"
    path.write_text("[jobs]\nmax_queue = 500\n")
    job = kit.job(config.load(str(path), env={}), "noop_pipeline")
    try:
        assert queue_bounds(job) == {"swarm.noop_pipeline.a": 500, "swarm.noop_pipeline.b": 500}
        assert queue_bounds(job, ["b"]) == {"swarm.noop_pipeline.b": 500}
    finally:
        job = kit.job(config.load(env={}), "noop_pipeline")  # the default: 0, unbounded
    assert queue_bounds(job) == {}
