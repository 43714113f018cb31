"""Hostile requests on the control socket: every one gets an answer line (an error), none a
traceback or a hang; and a reload of a hostile file never stalls the engine."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from labtools import settled, wait_for

from iprotate.engine.control import MAX_REQUEST, ControlServer, request
from iprotate.lab.lab import Lab


def raw(path: str, data: bytes, close: bool = True, timeout: float = 8.0) -> dict[str, Any]:
    """Send `data` as it is (half-closing afterwards if `close`) and read the one answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        if close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


HOSTILE = [
    b"x" * (MAX_REQUEST + 10) + b"\n",
    b'{"cmd": "status"',  # no newline, then the client closes
    b"[" * 30000 + b"]" * 30000 + b"\n",
    b"\xff\xfe\n",
    b'"just a string"\n',
    b'{"cmd": "drain", "vip": ""}\n',
    b'{"cmd": "drain", "vip": 5}\n',
    b'{"cmd": "drain", "vip": ["203.0.113.10"]}\n',
    b'{"cmd": "undrain", "vip": "999.1.1.1"}\n',
    b'{"cmd": "nope"}\n',
    b'{"cmd": ["status"]}\n',
]


def _serve_once(data: bytes, close: bool = True) -> dict[str, Any]:
    """A ControlServer with a handler that echoes, in this process."""

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("cmd") == "boom":
            raise RuntimeError("a bug")
        return {"ok": True, "echo": req}

    async def main() -> dict[str, Any]:
        import tempfile

        d = tempfile.mkdtemp()
        server = ControlServer(f"{d}/c.sock", handler)
        await server.start()
        try:
            return await asyncio.to_thread(raw, f"{d}/c.sock", data, close)
        finally:
            await server.close()

    return asyncio.run(main())


@pytest.mark.parametrize("data", HOSTILE[:5], ids=range(5))
def test_the_server_answers_every_malformed_request(data: bytes) -> None:
    answer = _serve_once(data)
    assert answer["ok"] is False or "echo" in answer, answer


def test_a_handler_bug_is_an_error_answer() -> None:
    answer = _serve_once(b'{"cmd": "boom"}\n')
    assert answer == {"ok": False, "error": "internal error: RuntimeError"}


def test_a_client_that_never_finishes_its_line_gets_an_answer() -> None:
    t0 = time.monotonic()
    answer = _serve_once(b'{"cmd": "sta', close=False)
    assert answer["ok"] is False and "no complete line" in answer["error"]
    assert time.monotonic() - t0 < 7.0


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_requests_always_get_one_answer(data: bytes) -> None:
    answer = _serve_once(data + b"\n")
    assert isinstance(answer, dict) and "ok" in answer


@pytest.mark.netns
def test_the_daemon_refuses_hostile_requests_and_carries_on(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=2, vips=4)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    path = str(lab.control_socket("alpha"))
    for data in HOSTILE:
        answer = raw(path, data)
        assert answer["ok"] is False, (data[:40], answer)
    # Nothing was drained ("" never means every VIP), the daemon still answers, nothing moved.
    doc = request(path, {"cmd": "status"})["status"]
    assert not any(v["drained"] for v in doc["vips"])
    assert settled(lab)()
    log = (lab.workdir / "alpha.log").read_text()
    assert "Traceback" not in log, log


@pytest.mark.netns
def test_a_reload_of_a_slow_hostile_file_never_stalls_the_engine(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """The largest file the loader takes (256 hosts, 65,000 VIPs) needs seconds to check and
    plan; meanwhile adverts go on (no VIP moves) and status answers; then it is refused (alpha
    is not in it) and the running plan stays."""
    lab = make_lab(hosts=2, vips=4)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    good = lab.cluster_file.read_text()
    lines = ["[cluster]", 'interface = "eth1"', 'password_file = "password"']
    for i in range(256):
        lines += ["[[hosts]]", f'name = "h{i}"', f'address = "198.51.101.{i}"']
    for g in range(255):
        lines += ["[[vips]]", f'pool = "198.18.{g}.1-198.18.{g}.255/32"', f'group = "239.1.0.{g}"']
    lab.cluster_file.write_text("\n".join(lines) + "\n")
    path = str(lab.control_socket("alpha"))
    answers: list[dict[str, Any]] = []

    async def main() -> list[float]:
        reload = asyncio.create_task(asyncio.to_thread(request, path, {"cmd": "reload"}, 60.0))
        took = []
        while not reload.done():
            t0 = time.monotonic()
            await asyncio.to_thread(request, path, {"cmd": "status"})
            took.append(time.monotonic() - t0)
            await asyncio.sleep(0.2)
        try:
            answers.append(await reload)
        except Exception as e:
            answers.append({"ok": False, "error": str(e)})
        return took

    took = asyncio.run(main())
    lab.cluster_file.write_text(good)
    assert len(took) >= 3, "the reload was too quick to tell anything"
    assert max(took) < 1.0, took  # status answered all along
    assert answers[0]["ok"] is False and "alpha" in answers[0]["error"], answers
    assert settled(lab)()
    assert "reload refused" in (lab.workdir / "alpha.log").read_text()


def test_a_group_lookup_that_hangs_never_stalls_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request from another user asks for the control group (grp.getgrnam: LDAP, NIS). One
    that hangs held the event loop (and the adverts) for as long as it hung."""
    import grp

    from iprotate.engine import control

    def slow_getgrnam(name: str) -> Any:
        time.sleep(1.0)
        raise KeyError(name)

    monkeypatch.setattr(grp, "getgrnam", slow_getgrnam)
    monkeypatch.setattr(control, "peer_uid_gid", lambda sock: (4242, 4242))  # another user

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def main() -> tuple[dict[str, Any], float]:
        import tempfile

        d = tempfile.mkdtemp()
        server = ControlServer(f"{d}/c.sock", handler, group="iprotate-ops")
        await server.start()
        gaps = [0.0]

        async def ticker() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - t)

        tick = asyncio.create_task(ticker())
        try:
            answer = await asyncio.to_thread(raw, f"{d}/c.sock", b'{"cmd": "status"}\n')
        finally:
            tick.cancel()
            await server.close()
        return answer, max(gaps)

    answer, worst = asyncio.run(main())
    assert answer == {"ok": False, "error": "permission denied"}
    assert worst < 0.5
