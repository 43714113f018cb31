"""The health-check runner (iprotate.engine.checks) on exec checks, without a network: pass, fail,
a hung program killed with its whole process group at the timeout, a missing program, bounded
output; and what metrics and hooks get of a check (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from iprotate.carp.node import Node
from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import Check
from iprotate.engine import metrics
from iprotate.engine.checks import CheckRunner, RunResult, run_once
from iprotate.engine.hooks import hook_for
from iprotate.plan.planner import make_plan

VIP = IPv4Address("203.0.113.10")


def check(*argv: str, timeout: float = 0.5, name: str = "c") -> Check:
    return Check(name=name, kind="exec", target=argv[0], argv=argv, vips=(VIP,),
                 interval=max(timeout, 0.05), timeout=timeout)  # fmt: skip


def script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "check.sh"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_exit_0_passes_with_its_last_line(tmp_path: Path) -> None:
    r = asyncio.run(run_once(check(script(tmp_path, "echo one\necho 'all good'\n"))))
    assert r.ok and r.detail == "all good"


def test_non_zero_fails_with_its_output(tmp_path: Path) -> None:
    r = asyncio.run(run_once(check(script(tmp_path, "echo 'db down' >&2\nexit 3\n"))))
    assert not r.ok and r.detail == "exit 3: db down"


def test_the_environment_is_a_fixed_path_and_the_check_name(tmp_path: Path) -> None:
    os.environ["IPROTATE_TEST_SECRET"] = "s3cret"
    try:
        r = asyncio.run(run_once(check(script(tmp_path, "env | sort | tr '\\n' ' '\n"))))
    finally:
        del os.environ["IPROTATE_TEST_SECRET"]
    assert "s3cret" not in r.detail and "IPROTATE_CHECK=c" in r.detail


def test_a_hung_program_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    tag = f"{time.time_ns() % 10**6}.5"
    prog = script(tmp_path, f"/bin/sleep {tag} &\n/bin/sleep {tag}\n")
    t0 = time.monotonic()
    r = asyncio.run(run_once(check(prog, timeout=0.3)))
    assert not r.ok and r.detail.startswith("timed out after 0.3 s, killed")
    assert time.monotonic() - t0 < 1.5
    time.sleep(0.1)
    assert not _running(tag)  # the background child went with its group


def test_a_passing_check_leaves_nothing_behind(tmp_path: Path) -> None:
    tag = f"{time.time_ns() % 10**6}.25"
    r = asyncio.run(run_once(check(script(tmp_path, f"/bin/sleep {tag} &\necho ok\n"))))
    assert r.ok
    time.sleep(0.1)
    assert not _running(tag)


def _running(tag: str) -> bool:
    for pid in os.listdir("/proc"):
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [b"/bin/sleep", tag.encode()]:
            return True
    return False


def test_a_program_that_cannot_start_fails(tmp_path: Path) -> None:
    r = asyncio.run(run_once(check(str(tmp_path / "nope"))))
    assert not r.ok and r.detail.startswith("cannot start") and "No such file" in r.detail
    noexec = tmp_path / "plain"
    noexec.write_text("echo hi\n")
    noexec.chmod(0o755)
    r = asyncio.run(run_once(check(str(noexec))))
    assert not r.ok and "cannot start" in r.detail


def test_a_flood_of_output_costs_bounded_memory_and_meets_the_timeout(tmp_path: Path) -> None:
    r = asyncio.run(run_once(check("/usr/bin/yes", timeout=0.3)))
    assert not r.ok and "timed out" in r.detail and len(r.detail) < 300


def test_the_runner_runs_at_its_interval_logs_a_start_failure_once_and_stops(
    tmp_path: Path, caplog
) -> None:
    results: list[tuple[str, RunResult]] = []

    async def main() -> None:
        runner = CheckRunner(lambda c, r: results.append((c.name, r)))
        gone = check(str(tmp_path / "nope"), timeout=0.05, name="gone")
        ok = check("/bin/true", timeout=0.05, name="ok")
        runner.update([gone, ok])
        await asyncio.sleep(0.5)
        runner.update([ok])  # a reload removed one
        n = sum(1 for name, _ in results if name == "gone")
        await asyncio.sleep(0.2)
        assert sum(1 for name, _ in results if name == "gone") == n
        await runner.close()

    asyncio.run(main())
    gone = [r for name, r in results if name == "gone"]
    assert 5 <= len(gone) <= 12  # every 50 ms, not in a tight loop
    assert caplog.text.count("check gone: cannot start") == 1


def test_metrics_and_hooks_see_the_checks() -> None:
    doc = {
        "cluster": {"interface": "eth1", "password": "x"},
        "hosts": [{"name": "alpha", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
        "checks": [{"name": "web", "tcp": "127.0.0.1:80", "fall": 1}],
        "run": {},
    }
    doc["cluster"]["down_script"] = "/bin/true"
    plan = make_plan(parse_cluster(doc, "t.toml"))
    node = Node.build(plan, "alpha")
    node.start(0.0)
    node.check_result(1.0, "web", False, "connect refused", 0.25)
    text = generate_latest(metrics.make_registry(lambda: node, lambda: 2.0, process=False))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }
    assert samples[("iprotate_check_up", (("check", "web"),))] == 0.0
    assert samples[("iprotate_check_runs_total", (("check", "web"), ("result", "failed")))] == 1
    assert samples[("iprotate_check_last_run_seconds", (("check", "web"),))] == 0.25
    assert any(k[0] == "iprotate_vip_sick" and v == 1.0 for k, v in samples.items())
    v = plan.vips[0]
    hook = hook_for(plan.cluster, v, "down", "eth1", node.checks_down(v.ip))
    assert hook is not None and hook.env["IPROTATE_CHECKS_DOWN"] == "web"
    assert "IPROTATE_CHECKS_DOWN" not in hook_for(plan.cluster, v, "down", "eth1").env


def test_user_drops_uid_and_every_group_of_the_daemon() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp_path is root's only
        os.chmod(d, 0o755)
        _user_check(Path(d))


def _user_check(tmp_path: Path) -> None:
    prog = script(tmp_path, "echo $(id -u) $(id -G)\n")
    c = Check(name="c", kind="exec", target=prog, argv=(prog,), vips=(VIP,), user="nobody")
    r = asyncio.run(run_once(c))
    if os.geteuid() != 0:
        assert not r.ok and "cannot start" in r.detail
        return
    import pwd

    nobody = pwd.getpwnam("nobody")
    uid, *groups = r.detail.split()
    assert r.ok and int(uid) == nobody.pw_uid
    assert "0" not in groups  # none of root's groups
    c = Check(name="c", kind="exec", target=prog, argv=(prog,), vips=(VIP,), user="no-such-x")
    r = asyncio.run(run_once(c))
    assert not r.ok and "no such user" in r.detail


def test_a_process_that_leaves_the_group_is_killed_too(tmp_path: Path) -> None:
    # setsid(): a new session and process group, which the group kill does not reach.
    tag = f"{time.time_ns() % 10**6}.75"
    body = (
        f"/usr/bin/setsid /bin/sleep {tag} </dev/null >/dev/null 2>&1 &\n/bin/sleep 0.2\necho ok\n"
    )
    r = asyncio.run(run_once(check(script(tmp_path, body), timeout=1.0)))
    assert r.ok
    time.sleep(0.1)
    assert not _running(tag)


def test_a_hung_process_that_left_the_group_is_killed_at_the_timeout(tmp_path: Path) -> None:
    tag = f"{time.time_ns() % 10**6}.125"
    body = f"/usr/bin/setsid /bin/sleep {tag} </dev/null >/dev/null 2>&1 &\n/bin/sleep 5\n"
    r = asyncio.run(run_once(check(script(tmp_path, body), timeout=0.3)))
    assert not r.ok and "timed out" in r.detail
    time.sleep(0.1)
    assert not _running(tag)


def test_a_cancelled_run_kills_what_left_the_group(tmp_path: Path) -> None:
    """The daemon stopping (or a reload) while a check runs: nothing of it stays."""
    tag = f"{time.time_ns() % 10**6}.375"
    body = f"/usr/bin/setsid /bin/sleep {tag} </dev/null >/dev/null 2>&1 &\n/bin/sleep 5\n"

    async def go() -> None:
        task = asyncio.create_task(run_once(check(script(tmp_path, body), timeout=5.0)))
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())
    time.sleep(0.1)
    assert not _running(tag)


def test_a_user_lookup_that_hangs_never_stalls_the_loop(monkeypatch: Any) -> None:
    """getpwnam asks LDAP or NIS on many hosts; one that hangs must cost the run (it fails at
    its timeout), never the event loop that sends the adverts."""
    import iprotate.engine.checks as checks_mod

    def slow_getpwnam(name: str) -> Any:
        time.sleep(1.5)
        raise KeyError(name)

    monkeypatch.setattr(checks_mod.pwd, "getpwnam", slow_getpwnam)
    c = dataclasses.replace(check("/bin/true", timeout=0.3), user="nobody")

    async def go() -> tuple[RunResult, float]:
        gaps = [0.0]

        async def ticker() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - t)

        tick = asyncio.create_task(ticker())
        r = await run_once(c)
        tick.cancel()
        return r, max(gaps)

    r, worst = asyncio.run(go())
    assert not r.ok and "looking up user nobody took longer than 0.3 s" in r.detail
    assert r.seconds < 1.0 and worst < 0.5


def test_a_program_whose_start_hangs_never_stalls_the_loop(monkeypatch: Any) -> None:
    """Popen returns once the child has exec'd: a program on a hung NFS mount holds it. With
    asyncio's subprocess that held the event loop; now the run fails at its timeout, and the
    process, when it finally starts, is killed."""
    import subprocess

    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def slow_exec(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)  # exec stuck in the kernel, as on a hung mount
        return real(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", slow_exec)
    tag = f"{time.time_ns() % 10**6}.625"

    async def go() -> tuple[RunResult, float]:
        gaps = [0.0]

        async def ticker() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - t)

        tick = asyncio.create_task(ticker())
        r = await run_once(check("/bin/sleep", tag, timeout=0.3))
        await asyncio.sleep(1.5)  # the daemon goes on: the late process comes and is killed
        tick.cancel()
        return r, max(gaps)

    r, worst = asyncio.run(go())
    assert not r.ok and "starting it took longer than 0.3 s" in r.detail, r.detail
    assert worst < 0.5
    assert not _running(tag)


def test_a_reload_looks_at_check_programs_off_the_loop(monkeypatch: Any) -> None:
    """A reload stats every exec check's program and looks its user up: on a hung NFS mount or
    LDAP that held the event loop (the daemon called loader.check_local in it)."""
    from iprotate.cluster import loader
    from iprotate.engine.checks import local_problems

    real_stat = os.stat

    def slow_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == "/opt/nfs/check":
            time.sleep(1.0)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(loader.os, "stat", slow_stat)
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
        "checks": [{"name": "nfs", "exec": ["/opt/nfs/check"]}],
    }
    cluster = parse_cluster(doc, "t.toml")

    async def go() -> tuple[list[str], float]:
        gaps = [0.0]

        async def ticker() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - t)

        tick = asyncio.create_task(ticker())
        problems = await local_problems(cluster, "a", frozenset({VIP}), wait=0.3)
        tick.cancel()
        return problems, max(gaps)

    problems, worst = asyncio.run(go())
    assert problems == ["the check programs and users could not be looked at within 0.3 s"]
    assert worst < 0.5
