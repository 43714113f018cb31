"""Up/down scripts: run them the way ucarp does, without ever holding up the engine.

ucarp 1.5.2 calls ``execl(script, script, interface, vip, xparam)`` and waits for it, sending no
advertisement meanwhile (see ../shared/CARP.md, "Scripts"). iprotate keeps the calling convention,
so the scripts people already have keep working::

    script INTERFACE VIP PREFIX

(VIP without its prefix length; PREFIX is what ``iprotate ucarp`` passes as ``-x`` when the VIP
lives on the interface given), but not the waiting: :meth:`HookRunner.run` only schedules the
script and returns at once, so a slow or hung script never delays a takeover or an advert of any
VIP. Scripts of one VIP run one after the other, in the order they were asked for (an "up" and the
"down" that follows it must not overtake each other); scripts of different VIPs run concurrently.

A script that outlives the timeout is killed (SIGTERM, then SIGKILL), by its PID only. Every
failure (cannot start, non-zero exit, killed by a signal, timed out) is logged with the VIP, the
event and the script, and counted; none is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Literal

from iprotate.cluster.model import Cluster, Vip
from iprotate.plan.model import VipPlan

Event = Literal["up", "down"]

#: The PATH of the whole environment a script gets (the rest are IPROTATE_* variables): the
#: daemon's own environment may hold secrets (credentials, a password) and is none of its business.
SCRIPT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_TIMEOUT = 10.0
DEFAULT_KILL_GRACE = 2.0

# How much of a failed script's output goes into the log: its last lines, which is where `set -e`
# scripts and most tools put the reason.
_OUTPUT_BYTES = 4096
# A script that prints more than this is no longer read (it blocks on the full pipe and meets its
# timeout): a runaway script must cost neither memory, disk nor the event loop's time.
OUTPUT_LIMIT = 1 << 20
_OUTPUT_LINES = 5
_OUTPUT_CHARS = 500


@dataclass(frozen=True)
class Hook:
    """One script call: `script interface vip.ip vip.prefixlen`, for `event`.

    `vhid` is only for log lines and the environment (None when the caller does not know it).
    """

    script: str
    interface: str
    vip: IPv4Interface | IPv6Interface
    event: Event
    vhid: int | None = None
    checks_down: tuple[str, ...] = ()  # this host's health checks of the VIP that are not up

    @property
    def argv(self) -> list[str]:
        """The argument vector, ucarp's: argv[0] is the script as configured."""
        return [self.script, self.interface, str(self.vip.ip), str(self.vip.network.prefixlen)]

    @property
    def env(self) -> dict[str, str]:
        """The script's whole environment: a fixed PATH and what this call is about. Never the
        daemon's environment, never the cluster password."""
        env = {
            "PATH": SCRIPT_PATH,
            "IPROTATE_EVENT": self.event,
            "IPROTATE_VIP": str(self.vip.ip),
            "IPROTATE_PREFIX": str(self.vip.network.prefixlen),
            "IPROTATE_INTERFACE": self.interface,
        }
        if self.vhid is not None:
            env["IPROTATE_VHID"] = str(self.vhid)
        if self.checks_down:
            # Why a VIP leaves (or is served as the last resort): its checks down on this host.
            env["IPROTATE_CHECKS_DOWN"] = ",".join(self.checks_down)
        return env

    @property
    def label(self) -> str:
        """How log lines name the VIP, in the daemon's style: ``10.0.0.5/24 vhid 7``."""
        return f"{self.vip} vhid {self.vhid}" if self.vhid is not None else str(self.vip)


def hook_for(
    cluster: Cluster,
    vip: Vip | VipPlan,
    event: Event,
    interface: str,
    checks_down: Iterable[str] = (),
) -> Hook | None:
    """The hook to run when `vip` goes `event` on this host, or None if no script is configured.

    The VIP's own script wins over the cluster's. `interface` is passed as the script's first
    argument: give the interface the VIP lives on (the host's ``vip_interface``), so that a ucarp
    up script that adds VIP/PREFIX on it finds the address already there. With a
    :class:`~iprotate.plan.model.VipPlan` the vhid goes into log lines and ``IPROTATE_VHID``.
    `checks_down`: the VIP's health checks not up on this host, as ``IPROTATE_CHECKS_DOWN``
    (comma-separated; absent when there is none).
    """
    model = vip.vip if isinstance(vip, VipPlan) else vip
    if event == "up":
        script = model.up_script or cluster.up_script
    else:
        script = model.down_script or cluster.down_script
    if script is None:
        return None
    vhid = vip.vhid if isinstance(vip, VipPlan) else model.vhid
    return Hook(
        script=script,
        interface=interface,
        vip=model.address,
        event=event,
        vhid=vhid,
        checks_down=tuple(checks_down),
    )


class HookRunner:
    """Runs hooks in the background on the running asyncio loop.

    One worker task per VIP with something to run, fed by that VIP's queue: its hooks run in order,
    other VIPs' hooks run beside them. Counters for metrics: `succeeded`, `failures` (could not
    start, non-zero exit, or killed by a signal that did not come from us) and `timeouts` (killed
    because it outlived `timeout`); each finished hook counts in exactly one of them.
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        logger: logging.Logger | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.timeout = timeout
        self.kill_grace = kill_grace  # between SIGTERM and SIGKILL on a timeout
        self.log = logger or logging.getLogger("iprotate.hooks")
        self.succeeded = 0
        self.failures = 0
        self.timeouts = 0
        self._queues: dict[IPv4Address | IPv6Address, deque[Hook]] = {}
        # Holding the tasks also keeps them from being garbage-collected mid-run.
        self._workers: dict[IPv4Address | IPv6Address, asyncio.Task[None]] = {}
        self._pending = 0

    def run(self, hook: Hook) -> None:
        """Schedule `hook` and return at once (never blocks, never raises for the script's sake).

        It starts when every hook asked for earlier for the same VIP has finished. Must be called
        from the thread of the running event loop.
        """
        key = hook.vip.ip
        self._queues.setdefault(key, deque()).append(hook)
        self._pending += 1
        if key not in self._workers:
            loop = asyncio.get_running_loop()
            self._workers[key] = loop.create_task(self._work(key), name=f"hooks {key}")

    def running(self) -> int:
        """How many hooks are scheduled and not finished: running, or waiting behind an earlier
        hook of the same VIP."""
        return self._pending

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every scheduled hook (including hooks scheduled
        meanwhile) to finish; True if they all did.

        Otherwise, for the shutdown that follows, the scripts still running are killed (SIGKILL, by
        PID) and the hooks still queued are dropped, both logged, and it returns False.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._workers:
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(list(self._workers.values()), timeout=left)
        if not self._workers:
            return True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return False

    # --- internals -----------------------------------------------------------------------------

    async def _work(self, key: IPv4Address | IPv6Address) -> None:
        queue = self._queues[key]
        try:
            while queue:
                hook = queue[0]
                try:
                    await self._execute(hook)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not stop the VIP's later hooks
                    self.failures += 1
                    self.log.exception(
                        "%s: %s script %s failed", hook.label, hook.event, hook.script
                    )
                queue.popleft()
                self._pending -= 1
        except asyncio.CancelledError:
            # drain() gave up: the running hook (queue[0]) was killed; the rest never start.
            self._pending -= len(queue)
            dropped = len(queue) - 1
            if dropped > 0:
                self.log.warning(
                    "%s: dropped %d queued script(s) at shutdown", queue[0].label, dropped
                )
            queue.clear()
            raise
        finally:
            # No await between the last `while queue` test and here, so a hook scheduled by
            # run() cannot fall between this worker ending and the next one being created.
            del self._workers[key]
            del self._queues[key]

    async def _execute(self, hook: Hook) -> None:
        # ucarp's execl() takes a name without '/' relative to the current directory; Popen would
        # search PATH instead, so spell the directory out (argv[0] stays the name as configured).
        program = hook.script if "/" in hook.script else os.path.join(".", hook.script)
        # Output goes to a pipe we made ourselves, not asyncio's: in Python 3.11 a subprocess'
        # wait() returns only once asyncio's pipes close, and a script that leaves a background
        # child (`arping &`) holding them would look hung although it had exited.
        with _Output(asyncio.get_running_loop()) as out:
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *hook.argv,
                    executable=program,
                    stdin=subprocess.DEVNULL,
                    stdout=out.write_fd,
                    stderr=out.write_fd,
                    env=hook.env,
                )
            except OSError as err:
                self.failures += 1
                self.log.error(
                    "%s: %s script %s could not be started: %s",
                    hook.label,
                    hook.event,
                    hook.script,
                    _start_error(err),
                )
                return
            out.child_started()
            try:
                try:
                    code = await asyncio.wait_for(proc.wait(), self.timeout)
                except TimeoutError:
                    how = await self._kill(proc)
                    self.timeouts += 1
                    self.log.error(
                        "%s: %s script %s timed out after %g s, killed (pid %d, %s)%s",
                        hook.label,
                        hook.event,
                        hook.script,
                        self.timeout,
                        proc.pid,
                        how,
                        _tail(out),
                    )
                    return
            except asyncio.CancelledError:
                # drain() gave up (or the loop is closing), possibly mid-kill: do not leave it
                # running behind a daemon that is about to exit.
                if proc.returncode is None:
                    _signal(proc, signal.SIGKILL)
                    self.log.warning(
                        "%s: %s script %s still running at shutdown, killed (pid %d)",
                        hook.label,
                        hook.event,
                        hook.script,
                        proc.pid,
                    )
                raise
            elapsed = time.monotonic() - started
            if code == 0:
                self.succeeded += 1
                self.log.debug(
                    "%s: %s script %s done in %.2f s", hook.label, hook.event, hook.script, elapsed
                )
                return
            self.failures += 1
            self.log.error(
                "%s: %s script %s %s after %.2f s%s",
                hook.label,
                hook.event,
                hook.script,
                _status(code),
                elapsed,
                _tail(out),
            )

    async def _kill(self, proc: asyncio.subprocess.Process) -> str:
        """SIGTERM `proc` (its PID only: children it left behind are its own business), SIGKILL
        it if still there after the grace; say which it took."""
        _signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace)
            return "SIGTERM"
        except TimeoutError:
            _signal(proc, signal.SIGKILL)
            await proc.wait()
            return f"SIGKILL after SIGTERM was ignored for {self.kill_grace:g} s"


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
        proc.send_signal(sig)


def _status(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _start_error(err: OSError) -> str:
    """Why exec failed, with what to do about it: the usual causes have a usual fix."""
    reason = err.strerror or str(err)
    if isinstance(err, FileNotFoundError):
        return f"{reason} (no such file, or its #! interpreter is missing)"
    if isinstance(err, PermissionError):
        return f"{reason} (is it executable? chmod 755)"
    if err.errno == errno.ENOEXEC:  # ucarp runs it without a shell too
        return f"{reason} (no #! line? it is run without a shell)"
    return reason


@dataclass
class _Output:
    """A script's stdout and stderr: a pipe read on the event loop, of which only the last
    `_OUTPUT_BYTES` are kept and at most `OUTPUT_LIMIT` are read."""

    loop: asyncio.AbstractEventLoop
    tail: bytearray = field(default_factory=bytearray)
    total: int = 0

    def __enter__(self) -> _Output:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self.loop.add_reader(self.read_fd, self._read)
        return self

    def child_started(self) -> None:
        """The child holds its own copy of the write end: ours goes, so EOF can come."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _read(self) -> None:
        try:
            chunk = os.read(self.read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self.total += len(chunk)
        self.tail += chunk
        del self.tail[:-_OUTPUT_BYTES]
        if not chunk or self.total >= OUTPUT_LIMIT:
            self.loop.remove_reader(self.read_fd)

    def __exit__(self, *exc: object) -> None:
        self._read()  # what is already in the pipe
        self.loop.remove_reader(self.read_fd)
        os.close(self.read_fd)
        self.child_started()


def _tail(out: _Output) -> str:
    """': ' and the last lines of what the script printed (stdout and stderr, interleaved), on
    one line; '' if it printed nothing."""
    lines = [
        line.strip() for line in out.tail.decode(errors="replace").splitlines() if line.strip()
    ]
    if not lines:
        return ""
    text = " | ".join(lines[-_OUTPUT_LINES:])
    if len(text) > _OUTPUT_CHARS:
        text = "..." + text[-_OUTPUT_CHARS:]
    more = f" (output over {OUTPUT_LIMIT} bytes, not all read)" if out.total >= OUTPUT_LIMIT else ""
    return f": {text}{more}"
