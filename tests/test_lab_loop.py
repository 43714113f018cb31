"""The interactive loop both labs run (iprotate.cli.lab_loop), fed a pipe for a terminal."""

from __future__ import annotations

import os

import pytest

from iprotate.cli.lab_loop import Commands, interactive


def _run(typed: str, commands: Commands, monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    os.write(w, typed.encode())
    os.close(w)
    with open(r) as stdin:  # a real file descriptor: the loop select()s on it
        monkeypatch.setattr("sys.stdin", stdin)
        interactive(lambda: "[clock]\ntable", commands)


def test_each_command_runs_its_action_and_the_rest_is_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done: list[tuple[str, str]] = []

    def broken(name: str) -> None:
        raise RuntimeError("cannot start")

    commands = Commands(
        {"fail": lambda n: done.append(("fail", n)), "fix": broken},
        ["alpha", "bravo"],
        "commands: fail NAME | quit",
        failures=(RuntimeError,),
        every=0.01,
    )
    _run("fail alpha\n\nfail charlie\nfix bravo\nfail bravo\nquit\nfail alpha\n", commands,
         monkeypatch)  # fmt: skip
    assert done == [("fail", "alpha"), ("fail", "bravo")]  # nothing after quit
    out = capsys.readouterr().out
    assert out.startswith("[clock]\ntable\n\ncommands: fail NAME | quit\n> ")
    assert "? fail charlie\ncommands: fail NAME | quit\n> " in out
    assert "fix bravo: cannot start\n> " in out


def test_the_end_of_input_ends_the_loop_and_other_errors_end_the_lab(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _run("", Commands({}, [], "help", every=0.01), monkeypatch)  # returns: end of input

    def broken(name: str) -> None:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        _run("start alpha\n", Commands({"start": broken}, ["alpha"], "help"), monkeypatch)
