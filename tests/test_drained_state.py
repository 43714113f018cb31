"""The drained state file (iprotate.engine.drained_state): exactly its shape, or ignored as a
whole; a daemon that finds a bad one logs it and takes part normally."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from labtools import settled, wait_for

from iprotate.engine.drained_state import (
    Drained,
    StateError,
    load,
    load_or_log,
    parse,
    path_for,
    save,
    save_or_error,
    to_drain,
)
from iprotate.lab.lab import Lab


def test_round_trip(tmp_path: Path) -> None:
    s = Drained(False, (IPv4Address("203.0.113.10"), IPv6Address("2001:db8:113::10")))
    save(tmp_path / "d.json", s)
    assert load(tmp_path / "d.json") == s
    assert load(tmp_path / "missing.json") is None


@pytest.mark.parametrize(
    "text",
    [
        '{"all": "no"}',  # once drained everything
        '{"all": 1}',
        '{"vips": "203.0.113.10"}',
        '{"vips": [10]}',
        '{"vips": ["not-an-address"]}',
        '{"all": false, "extra": 1}',
        "[]",
        "null",
        "{",
        "[" * 30000 + "]" * 30000,
        "",
    ],
)
def test_anything_else_is_refused_as_a_whole(text: str) -> None:
    with pytest.raises(StateError):
        parse(text)


@given(st.text(max_size=200))
def test_parse_never_raises_anything_but_state_error(text: str) -> None:
    with contextlib.suppress(StateError):
        parse(text)


def test_binary_and_special_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StateError):
        load(tmp_path / "bin.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(StateError):
        load(tmp_path / "dir.json")


@pytest.mark.netns
def test_a_corrupt_state_file_is_logged_and_the_host_takes_part(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=2, vips=4)
    state = lab.workdir / "state"
    state.mkdir()
    (state / "drained-alpha.json").write_text('{"all": "no"}')
    (state / "drained-bravo.json").write_bytes(b"\x00" * 100)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    for host in ("alpha", "bravo"):
        log = (lab.workdir / f"{host}.log").read_text()
        assert "ignoring the drained state" in log, log
        assert "Traceback" not in log
        assert lab.running(host)


def test_both_daemons_helpers_log_and_answer_as_the_daemons_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """load_or_log / to_drain / save_or_error: the lines and errors CARP and BGP mode share."""
    caplog.set_level("INFO", logger="iprotate")
    assert path_for(None, "alpha") is None
    path = path_for(str(tmp_path), "alpha")
    assert path == tmp_path / "drained-alpha.json"
    assert load_or_log(None) is None and load_or_log(path) is None  # nothing saved: no line
    assert save_or_error(None, Drained(True, ())) is None
    assert caplog.records == []
    path.write_text('{"all": "no"}')
    assert load_or_log(path) is None
    assert f"ignoring the drained state in {path}: " in caplog.text
    a, b = IPv4Address("203.0.113.10"), IPv4Address("203.0.113.11")
    assert list(to_drain(Drained(True, (a,)), lambda ip: False, "gone")) == [None]
    assert "still drained (every VIP): `iprotate undrain` to take part again" in caplog.text
    assert list(to_drain(Drained(False, (a, b)), {b}.__contains__, "is not here")) == [b]
    assert f"drained state: {a} is not here; ignored" in caplog.text
    assert f"{b} still drained: `iprotate undrain --vip {b}` to take it back" in caplog.text
    assert save_or_error(path, Drained(False, (b,))) is None
    assert load_or_log(path) == Drained(False, (b,))
    blocked = tmp_path / "file" / "drained-alpha.json"
    blocked.parent.write_text("")  # a file where the directory should be
    problem = save_or_error(blocked, Drained(True, ()))
    assert problem is not None and problem.startswith(
        f"cannot save the drained state to {blocked}: "
    )
    assert f"cannot save the drained state to {blocked}: " in caplog.text
