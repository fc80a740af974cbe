"""The `swarm` command is composed from Swarm's own command groups and the entry points' groups."""
from importlib import metadata

import pytest

from swarm import commands
from swarm.cli import EXIT_USAGE, main


def test_the_master_and_worker_commands_come_from_their_applications_entry_points():
    origins = [origin for origin, _ in commands.providers()]
    assert f"{commands.GROUP} entry point 'master'" in origins
    assert f"{commands.GROUP} entry point 'workers'" in origins
    assert f"{commands.GROUP} entry point 'hbase-dev'" in origins


def _with_entry_point(monkeypatch, name, value):
    real = metadata.entry_points
    extra = metadata.EntryPoint(name, value, commands.GROUP)

    def entry_points(group):
        found = list(real(group=group))
        return found + [extra] if group == commands.GROUP else found

    monkeypatch.setattr(commands.metadata, "entry_points", entry_points)


def test_a_command_plugin_that_cannot_be_loaded_is_named(monkeypatch, capsys):
    _with_entry_point(monkeypatch, "broken", "no_such_module_here:register")
    assert main(["runs"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "entry point 'broken'" in err and "no_such_module_here" in err


def test_two_groups_that_name_the_same_command_are_refused(monkeypatch, capsys):
    _with_entry_point(monkeypatch, "again", "swarm.commands.db:register")
    assert main(["runs"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "entry point 'again'" in err and "db" in err


@pytest.mark.parametrize("args", [["master", "--help"], ["worker", "--help"], ["demo", "--help"]])
def test_the_applications_commands_answer_help(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    assert f"usage: swarm {args[0]}" in capsys.readouterr().out
