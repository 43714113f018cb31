"""Health checks: run each of this host's `[[checks]]` on its own timer, never blocking the loop.

Each check is one asyncio task: run, report the result to the daemon (which feeds the node: the
rise/fall counting and what it does to the VIPs are the core's, iprotate.carp), sleep until
`interval` after the start of the run, again. A run never takes longer than `timeout`:

- tcp: connect (asyncio.open_connection), then close;
- http: a minimal GET over asyncio streams (HTTP/1.0, `Connection: close`): 2xx/3xx passes, or
  exactly `expect`; only the status line is read (bounded);
- exec: the program with its arguments, no shell, stdin /dev/null, in a process group of its
  own with a fixed PATH as its whole environment (as `user` if given); exit 0 passes. At the
  timeout the whole group is killed (SIGKILL): a hung check and whatever it started go. Only the
  last bytes of its output are kept (the last line goes to status), and at most OUTPUT_LIMIT
  read: a runaway check blocks on its full pipe and meets its timeout. A process that left the
  group (setsid(), a daemonizing check) is found by the token of its run in its environment
  and killed too, after every run: a check run every second must not leave one process a second
  behind. (Only a program that also clears its environment escapes this.)

The program is started in a thread (Popen returns only once the child has exec'd, which a hung
NFS mount can hold for ever) and its user looked up in one (getpwnam may ask a hung LDAP): both
bounded by the timeout, neither in the loop.

A check that cannot start (missing program, unknown user) fails like any other run, at its
interval (never in a tight loop), and the reason is logged once until it changes. Nothing here
runs on the takeover path: adverts and takeovers are timers of the daemon, and a check is only
ever a task beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import pwd
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from iprotate.cluster.loader import check_local, parse_http_url, split_host_port
from iprotate.cluster.model import Check, Cluster, IPAddress
from iprotate.engine.hooks import SCRIPT_PATH

# Bytes kept of an exec check's output (its last line is what status shows).
TAIL_BYTES = 4096
# Bytes read at most of an exec check's output; beyond, it blocks on the pipe until its timeout.
OUTPUT_LIMIT = 1 << 16
# Bytes read at most of an HTTP status line.
STATUS_LINE_LIMIT = 1024
# After SIGKILL a process is gone within microseconds, unless stuck in the kernel: wait no longer.
REAP_WAIT = 1.0
# The environment variable that marks every process of one exec run (inherited across setsid()).
RUN_TOKEN_VAR = "IPROTATE_CHECK_RUN"
# Rounds of the hunt for escaped processes: one may fork while the previous round kills.
ESCAPE_ROUNDS = 3

log = logging.getLogger("iprotate")


@dataclass(frozen=True)
class RunResult:
    """One run of a check: passed or not, its output line or error, how long it took."""

    ok: bool
    detail: str
    seconds: float
    escaped: int = 0  # processes of an exec run killed outside its group (setsid)


OnResult = Callable[[Check, RunResult], None]


async def run_once(check: Check) -> RunResult:
    """Run `check` once, within its timeout; never raises (but for cancellation)."""
    started = time.monotonic()
    escaped = 0
    try:
        if check.kind == "exec":
            ok, detail, escaped = await _exec(check)
        else:
            coro = _tcp(check) if check.kind == "tcp" else _http(check)
            try:
                ok, detail = await asyncio.wait_for(coro, check.timeout)
            except TimeoutError:
                ok, detail = False, f"timed out after {check.timeout:g} s"
    except OSError as e:
        ok, detail = False, _os_error(e)
    except Exception as e:  # a bug in a check must fail the check, not the daemon
        ok, detail = False, f"{type(e).__name__}: {e}"
    return RunResult(ok, detail, time.monotonic() - started, escaped)


def _os_error(e: OSError) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connect refused"
    return e.strerror or str(e) or type(e).__name__


async def _tcp(check: Check) -> tuple[bool, str]:
    target = split_host_port(check.target)
    assert target is not None  # the loader checked it
    _, writer = await asyncio.open_connection(*target)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"connected to {check.target}"


async def _http(check: Check) -> tuple[bool, str]:
    parsed = parse_http_url(check.target)
    assert parsed is not None  # the loader checked it
    ip, port, host, path = parsed
    reader, writer = await asyncio.open_connection(ip, port, limit=STATUS_LINE_LIMIT)
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: iprotate-check\r\n"
            "Connection: close\r\n\r\n".encode("ascii", "replace")
        )
        await writer.drain()
        try:
            line = await reader.readline()
        except ValueError:  # longer than the limit
            return False, "status line too long"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").split(None, 2)
    # isdigit() alone takes '²' (latin-1 0xb2), which int() refuses: three ASCII digits.
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/")
        or not re.fullmatch(r"[0-9]{3}", parts[1])
    ):
        return False, f"not an HTTP answer: {line[:80]!r}" if line else "connection closed"
    code = int(parts[1])
    status = f"HTTP {code}"
    if check.expect is not None:
        return (
            code == check.expect,
            status if code == check.expect else f"{status}, want {check.expect}",
        )
    return 200 <= code < 400, status


async def _exec(check: Check) -> tuple[bool, str, int]:
    identity: dict[str, Any] = {}
    if check.user is not None:
        # getpwnam may ask LDAP or NIS, which can hang: never in the loop that sends the adverts.
        # A lookup that hangs fails the run at the timeout (its thread is left to finish).
        try:
            identity = await asyncio.wait_for(
                asyncio.to_thread(_identity, check.user), check.timeout
            )
        except TimeoutError:
            why = f"looking up user {check.user} took longer than {check.timeout:g} s"
            return False, f"cannot start {check.target}: {why}", 0
        except (OSError, ValueError, KeyError) as e:  # KeyError: no such user
            return False, f"cannot start {check.target}: {_start_error(e)}", 0
    token = secrets.token_hex(16)
    first = _last_pid()  # every process of the run gets a later pid (unless pids wrap)
    # In the loop: with only the pids newer than the run to read, a scan takes well under a
    # millisecond.
    try:
        ok, detail = await _exec_group(check, token, identity)
    except BaseException:
        # Cancelled (stop, reload): the token also finds a process spawned just as the cancel
        # came, before the group kill could know its pid.
        if n := _kill_escaped(token, first):
            log.warning("check %s: killed %d process(es) it left outside its group", check.name, n)
        raise
    return ok, detail, _kill_escaped(token, first)


async def _exec_group(check: Check, token: str, identity: dict[str, Any]) -> tuple[bool, str]:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)
    out = _Tail()
    loop.add_reader(read_fd, out.read, read_fd, loop)
    proc: subprocess.Popen[bytes] | None = None
    # Popen returns once the child has exec'd: a program on a hung NFS mount would hold it (and
    # with asyncio's own subprocess it would hold the loop). In a thread, bounded by the timeout.
    spawn = loop.run_in_executor(
        None,
        functools.partial(
            subprocess.Popen,
            check.argv,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env={"PATH": SCRIPT_PATH, "IPROTATE_CHECK": check.name, RUN_TOKEN_VAR: token},
            start_new_session=True,  # its own process group: killed whole at the timeout
            cwd="/",
            **identity,
        ),
    )
    started = loop.time()
    try:
        try:
            proc = await asyncio.wait_for(asyncio.shield(spawn), check.timeout)
        except TimeoutError:  # first: TimeoutError is an OSError
            why = f"starting it took longer than {check.timeout:g} s"
            return False, f"cannot start {check.target}: {why}"
        except (OSError, ValueError) as e:
            return False, f"cannot start {check.target}: {_start_error(e)}"
        finally:
            if spawn.done():
                os.close(write_fd)
            else:  # still in Popen (timeout, cancel): the child gets the fd; kill it when it comes
                spawn.add_done_callback(functools.partial(_kill_late, write_fd))
        code = await _wait(proc, started + check.timeout - loop.time())
        if code is None:
            _kill_group(proc)
            await _wait(proc, REAP_WAIT)
            return False, f"timed out after {check.timeout:g} s, killed" + out.last_line(": ")
        # Whatever it left running in its group goes too: a check leaves nothing behind.
        _kill_group(proc)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)  # cancelled (stop, reload): never leave it running
            _reap_later(proc)
        out.read(read_fd, loop)
        loop.remove_reader(read_fd)
        os.close(read_fd)
    if code == 0:
        return True, out.last_line() or "exit 0"
    why = f"exit {code}" if code > 0 else f"killed by signal {-code}"
    return False, why + out.last_line(": ")


async def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code of `proc`, reaped, or None if it runs longer than `timeout`. Woken by a
    pidfd (no polling, no child watcher); every 10 ms a poll where pidfds are missing."""
    loop = asyncio.get_running_loop()
    if proc.poll() is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        fd = None
    if fd is None:
        end = loop.time() + timeout
        while proc.poll() is None:
            if loop.time() >= end:
                return None
            await asyncio.sleep(0.01)
        return proc.returncode
    try:
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            await asyncio.wait_for(exited, max(timeout, 0.0))
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    return proc.wait()  # it has exited: reaped at once


def _kill_late(write_fd: int, spawn: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A Popen that returned after its run gave up (timeout, cancel): kill what it started."""
    os.close(write_fd)
    if spawn.cancelled() or spawn.exception() is not None:
        return
    proc = spawn.result()
    _kill_group(proc)
    _reap_later(proc)


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Reap a killed `proc` off the loop (a process stuck in the kernel may take a while)."""
    with contextlib.suppress(RuntimeError):  # the loop is closing: Popen reaps it later
        asyncio.get_running_loop().run_in_executor(None, proc.wait)


# How long a reload waits for the look at this host's check programs and users.
LOCAL_CHECK_WAIT = 5.0


async def local_problems(
    cluster: Cluster, host: str, host_vips: frozenset[IPAddress], wait: float = LOCAL_CHECK_WAIT
) -> list[str]:
    """What stops `host`'s checks from running here (loader.check_local), looked at in a thread
    and waited for at most `wait` seconds: it stats each program (a hung NFS mount holds a stat
    for ever) and looks each user up (a hung LDAP holds getpwnam), never in the loop."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(check_local, cluster, host, host_vips), wait
        )
    except TimeoutError:
        return [f"the check programs and users could not be looked at within {wait:g} s"]


def _identity(user: str | None) -> dict[str, Any]:
    """Popen's arguments to run as `user`: its uid, its group and only its own supplementary
    groups (`user=` alone would keep the daemon's, root's among them). KeyError: no such user."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {
        "user": pw.pw_uid,
        "group": pw.pw_gid,
        "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
    }


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _last_pid() -> int:
    """The pid the kernel gave last in our pid namespace (/proc/loadavg's last field); -1 if
    unknown (then every process is looked at)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return -1


def _kill_escaped(token: str, first: int = -1) -> int:
    """SIGKILL every process whose environment carries this run's `token` (a process of the
    check that left its process group); how many were killed.

    Only the environments of processes with a pid above `first` (the last pid before the run)
    are read, unless pids wrapped since: a check every 50 ms must not read every process's
    environment 20 times a second."""
    marker = f"\0{RUN_TOKEN_VAR}={token}\0".encode()
    me = os.getpid()
    killed = 0
    for _ in range(ESCAPE_ROUNDS):
        found = 0
        last = _last_pid()
        above = first if 0 <= first <= last else -1
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) <= above or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = b"\0" + f.read() + b"\0"
            except OSError:  # gone, or a kernel thread
                continue
            if marker in env:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry), signal.SIGKILL)
                    found += 1
        killed += found
        if not found:
            break
    return killed


def _start_error(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"no such user ({e.args[0] if e.args else ''})"
    if isinstance(e, OSError):
        if e.errno == errno.ENOEXEC:
            return f"{e.strerror} (no #! line? it is run without a shell)"
        return e.strerror or str(e)
    return str(e)


@dataclass
class _Tail:
    """The last TAIL_BYTES of a child's output, at most OUTPUT_LIMIT read."""

    data: bytearray = field(default_factory=bytearray)
    total: int = 0
    done: bool = False

    def read(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        if self.done:
            return
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self.total += len(chunk)
        self.data += chunk
        del self.data[:-TAIL_BYTES]
        if not chunk or self.total >= OUTPUT_LIMIT:
            self.done = True
            loop.remove_reader(fd)

    def last_line(self, prefix: str = "") -> str:
        lines = [ln.strip() for ln in self.data.decode(errors="replace").splitlines() if ln.strip()]
        return f"{prefix}{lines[-1]}" if lines else ""


class CheckRunner:
    """This host's checks, each on its own task; `update` follows a reload."""

    def __init__(self, on_result: OnResult, logger: logging.Logger | None = None) -> None:
        self.on_result = on_result
        self.log = logger or logging.getLogger("iprotate")
        self._tasks: dict[str, tuple[Check, asyncio.Task[None]]] = {}
        self._said: dict[str, str] = {}  # the last "cannot start" logged, per check
        self._escaped: set[str] = set()  # checks said to leave processes outside their group

    @property
    def checks(self) -> dict[str, Check]:
        return {name: c for name, (c, _) in self._tasks.items()}

    def update(self, checks: Iterable[Check]) -> None:
        """Run exactly `checks`: new ones start, changed ones restart, removed ones stop."""
        wanted = {c.name: c for c in checks}
        for name, (c, task) in list(self._tasks.items()):
            if wanted.get(name) != c:
                task.cancel()
                del self._tasks[name]
                self._said.pop(name, None)
                self._escaped.discard(name)
        loop = asyncio.get_running_loop()
        for name, c in wanted.items():
            if name not in self._tasks:
                task = loop.create_task(self._loop(c), name=f"check {name}")
                self._tasks[name] = (c, task)

    async def close(self) -> None:
        """Stop every check (a running exec check is killed with its group)."""
        tasks = [t for _, t in self._tasks.values()]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, check: Check) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            result = await run_once(check)
            if result.detail.startswith("cannot start"):
                if self._said.get(check.name) != result.detail:
                    self._said[check.name] = result.detail
                    self.log.error("check %s: %s", check.name, result.detail)
            else:
                self._said.pop(check.name, None)
            if result.escaped and check.name not in self._escaped:
                # Once: a check that daemonizes does it at every run.
                self._escaped.add(check.name)
                self.log.warning(
                    "check %s: killed %d process(es) it left running outside its group "
                    "(said once; it may do so at every run)",
                    check.name,
                    result.escaped,
                )
            try:
                self.on_result(check, result)
            except Exception:  # the daemon's business; the check goes on
                self.log.exception("check %s: handling its result failed", check.name)
            # The next run `interval` after this one started, and never at once after a slow one.
            await asyncio.sleep(max(started + check.interval - loop.time(), check.interval / 10))
