"""Up/down scripts (iprotate.engine.hooks): ucarp's calling convention, run in the background.

Each test runs its own event loop with asyncio.run (no pytest-asyncio) and real /bin/sh scripts
written into tmp_path that record what they were given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path
from typing import Any

import pytest

from iprotate.cluster.model import Cluster, Host, Vip
from iprotate.engine.hooks import (
    OUTPUT_LIMIT,
    SCRIPT_PATH,
    Event,
    Hook,
    HookRunner,
    hook_for,
)
from iprotate.plan.model import VipPlan

PASSWORD = b"hunter2-cluster-secret"
SENTINEL = "IPROTATE_TEST_PARENT_SENTINEL"


def script(tmp_path: Path, name: str, body: str, mode: int = 0o755) -> str:
    """Write `body` as a /bin/sh script and return its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


def hook(path: str, vip: str = "10.0.0.5/24", event: Event = "up", iface: str = "eth1") -> Hook:
    return Hook(script=path, interface=iface, vip=IPv4Interface(vip), event=event)


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> float:
    """Poll `cond` until true; the seconds it took (fails the test after `timeout`)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cluster(up: str | None = None, down: str | None = None, vips: tuple[Vip, ...] = ()) -> Cluster:
    return Cluster(
        path="cluster.toml",
        password=PASSWORD,
        advbase=1,
        dead_ratio=3,
        backups=1,
        hosts=(Host("a", IPv4Address("192.0.2.1"), "eth0", "eth1"),),
        vips=vips,
        up_script=up,
        down_script=down,
    )


# --- choosing the script ---------------------------------------------------------------------


def test_hook_for_prefers_the_vips_script_then_the_clusters() -> None:
    own = Vip(IPv4Interface("10.0.0.5/24"), "vips[0]", up_script="/vip-up", down_script=None)
    bare = Vip(IPv4Interface("10.0.0.6/24"), "vips[1]")
    c = cluster(up="/cluster-up", down="/cluster-down", vips=(own, bare))

    assert hook_for(c, own, "up", "eth1") == Hook("/vip-up", "eth1", own.address, "up")
    assert hook_for(c, own, "down", "eth1") == Hook("/cluster-down", "eth1", own.address, "down")
    assert hook_for(c, bare, "up", "eth1") == Hook("/cluster-up", "eth1", bare.address, "up")
    assert hook_for(cluster(), bare, "up", "eth1") is None
    assert hook_for(cluster(), bare, "down", "eth1") is None


def test_hook_for_a_planned_vip_carries_its_vhid() -> None:
    v = Vip(IPv4Interface("10.0.0.5/24"), "vips[0]", down_script="/d")
    vp = VipPlan(v, vhid=7, order=("a",), advskew=(0,), preempt=(True,))
    h = hook_for(cluster(), vp, "down", "eth1")
    assert h == Hook("/d", "eth1", v.address, "down", vhid=7)
    assert h is not None and h.label == "10.0.0.5/24 vhid 7"
    assert h.env["IPROTATE_VHID"] == "7"


def test_an_ipv6_vip_gets_its_prefix_as_ucarps_xparam_would() -> None:
    v = Vip(IPv6Interface("2001:db8:113::10/64"), "vips[0]", up_script="/u")
    vp = VipPlan(v, vhid=16, order=("a",), advskew=(0,), preempt=(True,))
    h = hook_for(cluster(), vp, "up", "eth1")
    assert h is not None
    assert h.argv == ["/u", "eth1", "2001:db8:113::10", "64"]
    assert (h.env["IPROTATE_VIP"], h.env["IPROTATE_PREFIX"]) == ("2001:db8:113::10", "64")
    assert h.label == "2001:db8:113::10/64 vhid 16"


# --- calling convention and environment --------------------------------------------------------


def test_argv_is_ucarps_and_the_env_is_minimal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SENTINEL, "leaked")
    monkeypatch.setenv("IPROTATE_PASSWORD", PASSWORD.decode())
    argv_file, env_file = tmp_path / "argv", tmp_path / "env"
    path = script(
        tmp_path,
        "up.sh",
        f'printf "%s\\n" "$0" "$#" "$@" > {argv_file}\n/usr/bin/env > {env_file}\n',
    )
    v = Vip(IPv4Interface("10.0.0.5/24"), "vips[0]")
    h = hook_for(cluster(up=path, vips=(v,)), v, "up", "eth1")
    assert h is not None

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(h)
        assert await runner.drain(5)
        assert runner.succeeded == 1 and runner.failures == 0

    run(main)
    assert argv_file.read_text().splitlines() == [path, "3", "eth1", "10.0.0.5", "24"]
    env_text = env_file.read_text()
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert SENTINEL not in env
    assert PASSWORD.decode() not in env_text
    assert env["PATH"] == SCRIPT_PATH
    assert {k: v for k, v in env.items() if k.startswith("IPROTATE_")} == {
        "IPROTATE_EVENT": "up",
        "IPROTATE_VIP": "10.0.0.5",
        "IPROTATE_PREFIX": "24",
        "IPROTATE_INTERFACE": "eth1",
    }
    # Nothing else but what the shell itself adds.
    assert {k for k in env if not k.startswith("IPROTATE_")} <= {"PATH", "PWD", "SHLVL", "_"}


def test_a_name_without_slash_is_found_in_the_current_directory_as_execl_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ran"
    script(tmp_path, "here.sh", f'echo "$0" > {out}\n')
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(hook("here.sh"))
        assert await runner.drain(5)

    run(main)
    # For a #! script the kernel hands the interpreter the path exec'd, not argv[0].
    assert out.read_text() == "./here.sh\n"


# --- never holding anything up -----------------------------------------------------------------


def test_a_slow_script_is_killed_and_another_vip_does_not_wait_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iprotate.hooks")
    pid_file, fast_out = tmp_path / "pid", tmp_path / "fast"
    slow = script(tmp_path, "slow.sh", f"echo $$ > {pid_file}\necho still working\nexec sleep 30\n")
    fast = script(tmp_path, "fast.sh", f"echo done > {fast_out}\n")

    async def main() -> None:
        runner = HookRunner(timeout=1.0, kill_grace=1.0)
        t0 = time.monotonic()
        runner.run(hook(slow, "10.0.0.5/24"))
        runner.run(hook(fast, "10.0.0.6/24"))
        assert time.monotonic() - t0 < 0.05  # run() only schedules
        await wait_for(pid_file.exists)
        await wait_for(fast_out.exists)
        # The other VIP's hook has finished while the slow one is still sleeping.
        assert time.monotonic() - t0 < 0.8
        await wait_for(lambda: runner.running() == 1)
        pid = int(pid_file.read_text())
        assert pid_alive(pid)
        assert await runner.drain(5)
        assert not pid_alive(pid)
        assert 1.0 <= time.monotonic() - t0 < 2.5
        assert (runner.succeeded, runner.failures, runner.timeouts) == (1, 0, 1)
        msg = f"10.0.0.5/24: up script {slow} timed out after 1 s, killed (pid {pid}, SIGTERM)"
        assert any(msg in r.getMessage() for r in caplog.records)
        assert any("still working" in r.getMessage() for r in caplog.records)
        assert all(r.levelno < logging.WARNING for r in caplog.records if "fast.sh" in r.message)

    run(main)


def test_a_script_ignoring_sigterm_gets_sigkill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file = tmp_path / "pid"
    stubborn = script(
        tmp_path, "stubborn.sh", f"trap '' TERM\necho $$ > {pid_file}\nexec sleep 30\n"
    )

    async def main() -> None:
        runner = HookRunner(timeout=0.5, kill_grace=0.3)
        runner.run(hook(stubborn, event="down"))
        assert await runner.drain(5)
        assert not pid_alive(int(pid_file.read_text()))
        assert runner.timeouts == 1

    run(main)
    assert "down script" in caplog.text
    assert "timed out after 0.5 s, killed" in caplog.text
    assert "SIGKILL after SIGTERM was ignored for 0.3 s" in caplog.text


def test_a_background_child_holding_the_output_does_not_make_the_script_hang(
    tmp_path: Path,
) -> None:
    # Like `arping &` in an up script: the script exits, its child keeps stdout/stderr open.
    pid_file = tmp_path / "child"
    path = script(tmp_path, "bg.sh", f"sleep 5 &\necho $! > {pid_file}\nexit 0\n")

    async def main() -> None:
        runner = HookRunner(timeout=2)
        t0 = time.monotonic()
        runner.run(hook(path))
        assert await runner.drain(5)
        assert time.monotonic() - t0 < 1.0
        assert (runner.succeeded, runner.timeouts) == (1, 0)

    try:
        run(main)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 9)


def test_a_script_that_prints_without_end_costs_bounded_memory_and_loop_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`yes` as an up script: the daemon reads at most OUTPUT_LIMIT bytes of it, keeps 4 KiB, and
    the event loop stays free (a timer due every 10 ms keeps firing); the script meets its
    timeout."""
    path = script(tmp_path, "yes.sh", "exec yes 'spam spam spam'\n")

    async def main() -> None:
        runner = HookRunner(timeout=1.0, kill_grace=0.5)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        runner.run(hook(path))
        assert await runner.drain(5)
        t.cancel()
        assert runner.timeouts == 1
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 0.2, max(gaps)

    run(main)
    assert f"output over {OUTPUT_LIMIT} bytes, not all read" in caplog.text
    assert "spam spam spam" in caplog.text


# --- failures are logged, not raised -----------------------------------------------------------


def test_a_failing_script_is_logged_with_its_code_and_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = script(tmp_path, "fail.sh", "echo starting\necho 'boom: route table full' >&2\nexit 3\n")

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(hook(path))
        assert await runner.drain(5)
        assert (runner.succeeded, runner.failures) == (0, 1)

    run(main)
    [rec] = [r for r in caplog.records if r.levelno == logging.ERROR]
    msg = rec.getMessage()
    assert msg.startswith(f"10.0.0.5/24: up script {path} exited with code 3 after ")
    assert msg.endswith(": starting | boom: route table full")


def test_a_script_killed_by_a_signal_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = script(tmp_path, "segv.sh", "kill -SEGV $$\n")

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(hook(path))
        assert await runner.drain(5)
        assert runner.failures == 1

    run(main)
    assert f"up script {path} was killed by SIGSEGV" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "mode", "why"),
    [
        ("missing.sh", None, 0, "No such file or directory"),
        ("noexec.sh", "#!/bin/sh\nexit 0\n", 0o644, "chmod 755"),
        ("noshebang.sh", "exit 0\n", 0o755, "no #! line"),
    ],
)
def test_a_script_that_cannot_start_is_logged_and_later_hooks_still_run(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    content: str | None,
    mode: int,
    why: str,
) -> None:
    bad = tmp_path / name
    if content is not None:
        bad.write_text(content)
        bad.chmod(mode)
    after = tmp_path / "after"
    down = script(tmp_path, "down.sh", f"echo ran > {after}\n")

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(hook(str(bad), event="up"))  # must not raise
        runner.run(hook(down, event="down"))
        assert await runner.drain(5)
        assert (runner.succeeded, runner.failures) == (1, 1)

    run(main)
    assert after.exists()
    [rec] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert rec.getMessage().startswith(f"10.0.0.5/24: up script {bad} could not be started: ")
    assert why in rec.getMessage()


# --- ordering and shutdown ---------------------------------------------------------------------


def test_up_then_down_of_one_vip_keep_their_order_even_if_up_is_slow(tmp_path: Path) -> None:
    log_file = tmp_path / "events"
    up = script(tmp_path, "up.sh", f"sleep 0.4\necho up $2 >> {log_file}\n")
    down = script(tmp_path, "down.sh", f"echo down $2 >> {log_file}\n")
    other = script(tmp_path, "other.sh", f"echo other $2 >> {log_file}\n")

    async def main() -> None:
        runner = HookRunner(timeout=5)
        runner.run(hook(up, "10.0.0.5/24", "up"))
        runner.run(hook(down, "10.0.0.5/24", "down"))
        runner.run(hook(other, "10.0.0.6/24", "up"))
        assert runner.running() == 3
        assert await runner.drain(5)
        assert runner.running() == 0

    run(main)
    # The other VIP did not queue behind the slow one; this VIP's down waited for its up.
    assert log_file.read_text().splitlines() == ["other 10.0.0.6", "up 10.0.0.5", "down 10.0.0.5"]


def test_drain_waits_for_running_hooks(tmp_path: Path) -> None:
    done = tmp_path / "done"
    path = script(tmp_path, "down.sh", f"sleep 0.3\necho ok > {done}\n")

    async def main() -> None:
        runner = HookRunner(timeout=5)
        assert await runner.drain(1)  # nothing to wait for
        runner.run(hook(path, event="down"))
        assert runner.running() == 1
        t0 = time.monotonic()
        assert await runner.drain(5)
        assert time.monotonic() - t0 >= 0.25
        assert done.exists()
        assert runner.running() == 0

    run(main)


def test_drain_past_its_timeout_kills_the_running_script_and_drops_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file, never = tmp_path / "pid", tmp_path / "never"
    slow = script(tmp_path, "slow.sh", f"echo $$ > {pid_file}\nexec sleep 30\n")
    later = script(tmp_path, "later.sh", f"echo ran > {never}\n")

    async def main() -> None:
        runner = HookRunner(timeout=30)
        runner.run(hook(slow, event="up"))
        runner.run(hook(later, event="down"))
        await wait_for(pid_file.exists)
        t0 = time.monotonic()
        assert not await runner.drain(0.3)
        assert time.monotonic() - t0 < 1.0
        assert runner.running() == 0
        pid = int(pid_file.read_text())
        await wait_for(lambda: not pid_alive(pid))

    run(main)
    assert not never.exists()
    assert "still running at shutdown, killed" in caplog.text
    assert "dropped 1 queued script(s) at shutdown" in caplog.text
