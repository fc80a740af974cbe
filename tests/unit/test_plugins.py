"""Finding a job's module, and saying why when it cannot be imported."""
import pytest

from swarm.cli import EXIT_USAGE, main
from swarm.errors import PluginError
from swarm.plugins import load_job

JOB_MODULE = '''from swarm import Chunk, Job

job = Job("{name}", params=("date",))


@job.planner("map")
def plan(ctx):
    yield Chunk("c0")


@job.stage("a", phase="map")
def a(ctx, msg):
    return []
'''


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_module_on_the_path_gives_its_job(path, unique):
    (path / f"url_daily_{unique}.py").write_text(JOB_MODULE.format(name=f"url_daily_{unique}"))
    assert load_job(f"url_daily_{unique}", [f"url_daily_{unique}"]).name == f"url_daily_{unique}"


def test_a_module_not_on_the_path_says_how_to_make_it_importable(unique):
    with pytest.raises(PluginError) as err:
        load_job("url_daily", [f"url_daily_{unique}"])
    assert str(err.value) == (
        f"cannot import job module 'url_daily_{unique}': it is not on the Python path. The module must be "
        f"importable: install its package (`pip install -e .` in the project that holds it), or set PYTHONPATH to "
        f"the directory that holds it (`PYTHONPATH=. swarm ...` from there: the `swarm` command does not look in "
        f"the current directory); and jobs.modules (or SWARM_JOBS_MODULES) must list it by that name")


def test_a_package_not_on_the_path_is_named(unique):
    with pytest.raises(PluginError, match=f"cannot import job module 'co_{unique}.jobs.clicks': its package "
                                          f"'co_{unique}' is not on the Python path. The module must be importable"):
        load_job(f"co_{unique}.jobs.clicks")


def test_a_module_that_imports_something_missing_shows_that_error_not_a_path_hint(path, unique):
    (path / f"url_daily_{unique}.py").write_text("import json\nimport not_installed_anywhere\n")
    with pytest.raises(PluginError) as err:
        load_job("url_daily", [f"url_daily_{unique}"])
    said = str(err.value)
    assert said.startswith(f"job module 'url_daily_{unique}' was found, but importing it failed: "
                           f"ModuleNotFoundError: No module named 'not_installed_anywhere' (at ")
    assert said.endswith(f"url_daily_{unique}.py, line 2)") and "PYTHONPATH" not in said


@pytest.mark.parametrize("code, says", [
    ("raise RuntimeError('no region configured')", "RuntimeError: no region configured (at "),
    ("job = (", "SyntaxError: '(' was never closed"),
])
def test_an_error_inside_the_module_is_shown_as_it_is(path, unique, code, says):
    (path / f"url_daily_{unique}.py").write_text(code + "\n")
    with pytest.raises(PluginError) as err:
        load_job("url_daily", [f"url_daily_{unique}"])
    assert f"job module 'url_daily_{unique}' was found, but importing it failed: {says}" in str(err.value)


@pytest.mark.parametrize("module", ["jobs/url_daily.py", "url_daily.py", ""])
def test_a_file_path_is_not_a_module_name(module):
    with pytest.raises(PluginError, match="give a module's name as Python imports it .*not a file path"):
        load_job("url_daily", [module])


def test_an_unknown_job_says_where_jobs_come_from():
    with pytest.raises(PluginError, match=r"no job named 'url_daily'; known jobs: .*merchant_daily.* \(a job's "
                                          r"module must be listed in jobs.modules, or its package declare a "
                                          r"'swarm.jobs' entry point\)"):
        load_job("url_daily")


def test_the_worker_command_exits_2_with_the_hint(tmp_path, monkeypatch, capsys, unique):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "swarm.toml").write_text(f'[jobs]\nmodules = ["url_daily_{unique}"]\n')
    assert main(["worker", "--job", f"url_daily_{unique}"]) == EXIT_USAGE
    assert f"cannot import job module 'url_daily_{unique}': it is not on the Python path" in capsys.readouterr().err
