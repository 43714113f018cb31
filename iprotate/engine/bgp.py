"""`iprotate run` in BGP mode: this host's part of the plan as BGP routes, through BIRD 2.

Which speaker, measured (bench/bgp_speakers.py, figures in bench/results/bgp.md): BIRD 2 and
ExaBGP both bring a session up, announce, re-rank (MED) and withdraw a /32 in a few ms to tens of
ms, and a killed speaker's routes leave the router at once (its TCP session closes). The choice
is BIRD 2 because:
- BFD: BIRD has it, ExaBGP has none. A frozen host or a pulled link is seen in ~0.3 s with BFD
  (100 ms x 3) against the hold time (3 s at least) without it; the issue asks for under a second.
- One daemon, from Debian, configured by a file iprotate owns and reloaded with `birdc configure`:
  the file is the whole truth, so a restarted speaker announces exactly what it should. ExaBGP's
  process API holds the state in a pipe: a restart must replay it, and the API's helper process
  would be a second thing to supervise.
- The lab's router is BIRD 2 as well: one tool to know.

What this shell does (the decisions are in iprotate.bgp.announcer, a pure core):
- the VIPs, as /32s and /128s, on `vip_interface` (a dummy interface, created if missing), so
  the host accepts the traffic it is sent; an IPv6 one `nodad` (duplicate address detection
  would leave it tentative, dead for a second, and on a dummy or lo there is nobody to ask); one
  removed by someone else is added back within a second, and so is the interface (set down: up
  again; deleted: made again, or the daemon stops and its routes go: a route must never lead to
  a host without the address); removed on a clean stop after the routes are withdrawn;
- BIRD started as a child (its config and control socket beside the control socket), with
  PR_SET_PDEATHSIG: if iprotate dies, BIRD gets SIGTERM and its sessions close, so the routers
  withdraw every route of this host; BIRD dying on its own is restarted (it reads the current
  file), more than MAX_RESTARTS times in RESTART_WINDOW seconds fails the daemon cleanly;
- every change of the announcer: the file rewritten, then `birdc configure`; a configure that
  fails or hangs restarts BIRD; so does a BIRD that stops answering on its control socket
  (checked every second: a frozen BIRD's sessions expire at the routers, and nothing else
  would bring this host's routes back); a file that cannot be written stops the daemon;
- drain: worst route, `drain_wait` seconds, withdrawn (make-before-break: the router's choice is
  not visible from the host; an UPDATE reaches it in ms, so a fixed wait is a safe signal); the
  drained state is saved in `state_dir` (CARP mode's file) and restored before anything is
  announced; a host drained whole takes the VIPs a reload adds drained;
- reload: VIPs added and removed (the route at once, the address `drain_wait` later: the
  router has the withdrawal by then), ranks changed; not the sessions' settings (BIRD would
  reset every session at once: refused, a restart host by host hands over first);
- stop (SIGTERM): every route worst, `drain_wait`, every route withdrawn, BIRD stopped, the
  addresses removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iprotate.bgp import bird
from iprotate.bgp import status as bgp_status
from iprotate.bgp.announcer import Announcer
from iprotate.carp.health import CheckState
from iprotate.cluster.loader import load_cluster
from iprotate.cluster.model import Check, ClusterError, IPAddress
from iprotate.engine import drained_state, hostlock
from iprotate.engine.checks import CheckRunner, RunResult
from iprotate.engine.control import BadRequest, bind_server, drain_answer, drain_target
from iprotate.engine.early_signals import EarlySignals
from iprotate.engine.metrics import parse_address
from iprotate.engine.sdnotify import Notifier, keep_watchdog
from iprotate.engine.signals import install_for_daemon
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

log = logging.getLogger("iprotate")

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
BIRDC_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1


class BgpFailed(Exception):
    """The speaker cannot be kept running: the daemon stops (its routes are withdrawn)."""


@dataclass(frozen=True)
class BgpOptions:
    hold_down: float = 3.0
    stagger: float = 0.1
    control_socket: str | None = None
    control_group: str | None = None
    run_dir: str = "/run/iprotate"  # BIRD's config and control socket: <run_dir>/<host>.bird.*
    cluster_file: str | None = None
    metrics: str | None = None  # "127.0.0.1:9650": Prometheus metrics there
    state_dir: str | None = None  # where the drained state survives restarts; None: nowhere


def tool(name: str) -> str:
    """A BIRD binary by name or path: on PATH, else Debian's /usr/sbin (not on every user's
    PATH)."""
    if "/" in name:
        return name
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        return f"/usr/sbin/{name}"
    return found or name


# Looked up once, in the parent: between fork and exec (a reload's thread may be running) the
# child must not dlopen, which can deadlock on a lock another thread held at the fork.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when iprotate dies, however it dies."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class BgpDaemon:
    """One host in BGP mode. `await BgpDaemon(plan, host, options).run()`."""

    def __init__(
        self, plan: Plan, host: str, options: BgpOptions, early: EarlySignals | None = None
    ) -> None:
        s = plan.cluster.bgp
        if s is None:
            raise ValueError("the cluster has no [bgp] table")
        self.plan = plan
        self.host = plan.cluster.host(host)
        self.options = options
        self.early = early
        self.announcer = Announcer(plan, host, options.hold_down, options.stagger, s.drain_wait)
        base = Path(options.run_dir)
        self.conf = base / f"{host}.bird.conf"
        self.ctl = base / f"{host}.bird.ctl"
        self.pidfile = base / f"{host}.bird.pid"  # finds a leftover BIRD that cannot answer
        self.bird: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []
        self.notifier = Notifier()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._failed: str | None = None
        self._applied: str | None = None
        self._apply_lock = asyncio.Lock()
        self._reloading = False
        self._drain_all = False  # `drain` of every VIP: VIPs a reload adds come drained too
        # VIPs a reload took from this host: their route is withdrawn, their address stays
        # drain_wait more (the router's UPDATE takes ms; packets already sent are answered).
        self._parting: set[IPAddress] = set()
        self._later: set[asyncio.Task[None]] = set()
        self.configures = 0
        self.sessions: dict[str, bird.Session] = {}
        # Health checks (issue 13): the rise/fall counting is the CARP core's CheckState; what a
        # check that is not up does here is the announcer's (set_sick: leave as in a drain).
        self.health = {c.name: CheckState(c) for c in plan.checks_for(host)}
        self.checks = CheckRunner(self._check_result, log)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            lock = hostlock.lock(self.host)
        except hostlock.HostInUse as e:
            raise BgpFailed(str(e)) from None
        control = None
        rules = None
        exporter = None
        tasks: list[asyncio.Task[None]] = []
        try:
            control = await bind_server(
                self.options.control_socket, self._control, self.options.control_group, BgpFailed
            )
            if self.options.metrics:
                try:
                    exporter = serve_bgp_metrics(self.options.metrics, self)
                except (ValueError, OSError) as e:
                    raise BgpFailed(f"metrics on {self.options.metrics!r}: {e}") from None
            Path(self.options.run_dir).mkdir(parents=True, exist_ok=True)
            await self._stop_leftover_speaker()
            self._vip_interface()
            self._set_addresses(add=True)
            self._write()
            await self._start_bird()
            if control is not None:
                await control.serve()
            rules = install_for_daemon(
                loop, self._stopping, self.reload, self._log_status, _no_demote, self.early
            )
            # A host drained for maintenance stays drained across restarts (as in CARP mode).
            self._restore_drained(loop.time())
            # A check starts unknown: its VIPs wait for its first pass (as in CARP mode).
            self.announcer.set_sick(loop.time(), self._sick_ips())
            self.announcer.start(loop.time())
            self.checks.update(st.check for st in self.health.values())
            log.info(
                "%s: BGP mode, %d VIPs on %s, peering with %s; announcing after %g s",
                self.host.name,
                len(self.announcer.vips),
                self.host.vip_interface,
                ", ".join(str(r.address) for r in self.plan.cluster.routers_of(self.host.name)),
                self.options.hold_down,
            )
            tasks = [
                asyncio.ensure_future(self._timers()),
                asyncio.ensure_future(self._supervise()),
                asyncio.ensure_future(self._watch_sessions()),
                asyncio.ensure_future(keep_watchdog(self.notifier)),
            ]
            self.notifier.ready(f"BGP mode, {len(self.announcer.vips)} VIPs")
            await self._stopping.wait()
            self.notifier.stopping()
            # The hand-over takes drain_wait (the loader allows 300 s) and, with a deaf BIRD, a
            # configure's timeout and a restart on top: beyond TimeoutStopSec (30 s in the
            # unit) systemd would SIGKILL us halfway. Ask for the time it takes.
            need = self.announcer.drain_wait + 3 * BIRDC_TIMEOUT + 5
            self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int(need * 1_000_000)}")
            if self._failed is None:
                await self._leave()
        finally:
            await self.checks.close()
            for t in [*tasks, *self._later]:
                t.cancel()
            if rules is not None:
                rules.remove()
            self._stop_bird()
            self._set_addresses(add=False)
            self._set_addresses(add=False, ips=sorted(self._parting))
            for p in (self.conf, self.ctl, self.pidfile):
                with contextlib.suppress(OSError):
                    p.unlink()
            if control is not None:
                await control.close()
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()
            lock.close()
        if self._failed is not None:
            raise BgpFailed(self._failed)

    def stop(self) -> None:
        self._stopping.set()

    async def _leave(self) -> None:
        """Make-before-break on the way out: every route worst, then withdrawn."""
        loop = asyncio.get_running_loop()
        self.announcer.stop(loop.time())
        await self._apply("stopping: every route the worst")
        while not self.announcer.all_withdrawn():
            due = self.announcer.next_deadline()
            await asyncio.sleep(max(0.0, (due or loop.time()) - loop.time()))
            self.announcer.tick(loop.time())
        await self._apply("stopping: every route withdrawn")
        log.info("%s: every route withdrawn; stopping BIRD", self.host.name)

    # --- the announcer's clock -----------------------------------------------------------------

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self.announcer.next_deadline()
            timeout = None if due is None else max(0.0, due - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
            if self._stopping.is_set():
                return
            if self.announcer.tick(loop.time()) or self._applied != self._render():
                await self._apply("timer")

    def _poke(self) -> None:
        self._changed.set()

    # --- health checks -------------------------------------------------------------------------

    def _sick_ips(self) -> set[IPAddress]:
        return {ip for st in self.health.values() if not st.up for ip in st.vips}

    def _check_result(self, check: Check, result: RunResult) -> None:
        st = self.health.get(check.name)
        if st is None or self._stopping.is_set():
            return
        now = asyncio.get_running_loop().time()
        change = st.result(now, result.ok, result.detail, result.seconds)
        if change is None:
            return
        log.info("%s", change.line(self.host.name))
        self.announcer.set_sick(now, self._sick_ips())
        self._poke()  # the timer task writes and loads the new configuration

    # --- BIRD ----------------------------------------------------------------------------------

    def _render(self) -> str:
        return bird.config(self.plan.cluster, self.host.name, self.announcer.routes())

    def _write(self) -> str:
        text = self._render()
        # The run directory may have been removed under us (rm -rf /run/iprotate, a tmpfiles
        # clean-up): make it again rather than never write another configuration.
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf)
        return text

    async def _apply(self, why: str) -> None:
        """Write the file and have BIRD read it; a BIRD that cannot is restarted on the file."""
        async with self._apply_lock:
            if self._failed is not None:
                return  # BIRD is being stopped: nothing more to tell it
            try:
                text = self._write()
            except OSError as e:
                # What is announced can no longer be changed: stop (BIRD's sessions close and
                # every route of this host goes), rather than keep routes nobody can withdraw.
                self._fail(f"cannot write {self.conf}: {e.strerror or e}")
                return
            if text == self._applied:
                return
            before = {r.prefix: r.med for r in _routes_of(self._applied)}
            ok, out = await self._birdc("configure")
            if not ok or not ("Reconfigured" in out or "in progress" in out):
                log.warning("birdc configure failed (%s): restarting BIRD", out.strip()[-200:])
                self._stop_bird()
                try:
                    await self._start_bird()
                except BgpFailed as e:
                    # Raised here it would end the caller (the timer task, a reload) and leave
                    # the daemon running with nobody to withdraw its routes.
                    self._fail(str(e))
                    return
            self._applied = text
            self.configures += 1
            after = {r.prefix: r.med for r in self.announcer.routes()}
            for prefix in sorted(set(before) | set(after)):
                if before.get(prefix) != after.get(prefix):
                    log.info(
                        "%s: announce %s: %s -> %s (%s)",
                        self.host.name,
                        prefix,
                        _med(before.get(prefix)),
                        _med(after.get(prefix)),
                        why,
                    )

    async def _birdc(self, *cmd: str) -> tuple[bool, str]:
        try:
            p = await asyncio.create_subprocess_exec(
                tool(self.plan.cluster.bgp.birdc),  # type: ignore[union-attr]
                "-s",
                str(self.ctl),
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            return False, str(e)
        try:
            out, _ = await asyncio.wait_for(p.communicate(), BIRDC_TIMEOUT)
        except TimeoutError:
            p.kill()
            await p.wait()
            return False, f"birdc {' '.join(cmd)}: no answer in {BIRDC_TIMEOUT:g} s"
        return p.returncode == 0, out.decode(errors="replace")

    async def _start_bird(self) -> None:
        s = self.plan.cluster.bgp
        assert s is not None
        argv = [tool(s.speaker), "-f", "-c", str(self.conf), "-s", str(self.ctl)]
        argv += ["-P", str(self.pidfile)]
        try:
            self._write()  # BIRD reads what is decided now (the file may be gone with its dir)
        except OSError as e:
            raise BgpFailed(f"cannot write {self.conf}: {e.strerror or e}") from None
        try:
            self.bird = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # prctl only, before exec
            )
        except OSError as e:
            raise BgpFailed(f"cannot start BIRD ({s.speaker}): {e}") from None
        # Ready when its control socket answers.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BIRDC_TIMEOUT
        while loop.time() < deadline:
            if self.bird.poll() is not None:
                raise BgpFailed(f"BIRD exited at once (status {self.bird.returncode}): {argv}")
            if self.ctl.exists():
                ok, _ = await self._birdc("show", "status")
                if ok:
                    self._applied = self.conf.read_text()
                    log.info("%s: BIRD running (pid %d)", self.host.name, self.bird.pid)
                    return
            await asyncio.sleep(0.02)
        raise BgpFailed("BIRD did not answer on its control socket")

    def _stop_bird(self) -> None:
        p, self.bird = self.bird, None
        if p is None or p.poll() is not None:
            return
        p.terminate()  # BIRD sends a Cease on every session: the routers withdraw at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGCONT)  # a frozen BIRD must act on it, not keep us waiting
        try:
            p.wait(3.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    async def _stop_leftover_speaker(self) -> None:
        """A BIRD still on our control socket (its iprotate was SIGKILLed while BIRD was
        frozen, say) announces what nobody decides any more: tell it to go. Found by its pid
        file (a frozen one cannot answer `down`: its death signal from PR_SET_PDEATHSIG waits
        for a SIGCONT), else asked on its control socket."""
        pid = _leftover_pid(self.pidfile, self.ctl)
        if pid is not None:
            log.warning("%s: stopping the leftover BIRD pid %d (%s)", self.host.name, pid, self.ctl)
            for sig in (signal.SIGTERM, signal.SIGCONT):  # as `down`: a Cease on every session
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            for _ in range(150):  # 3 s, then for good
                if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif self.ctl.exists():
            ok, _ = await self._birdc("down")
            if ok:
                log.warning("%s: stopped a leftover BIRD on %s", self.host.name, self.ctl)
                await asyncio.sleep(0.2)
        for p in (self.ctl, self.pidfile):
            with contextlib.suppress(OSError):
                p.unlink()

    async def _supervise(self) -> None:
        """Restart a BIRD that died; fail the daemon if it keeps dying."""
        while True:
            await asyncio.sleep(0.1)
            p = self.bird
            if p is None or p.poll() is None or self._stopping.is_set():
                continue
            log.error("%s: BIRD exited (status %s)", self.host.name, p.returncode)
            if not await self._restart_bird(p):
                return

    async def _restart_bird(self, p: subprocess.Popen[bytes]) -> bool:
        """Replace BIRD `p` (dead, or alive but deaf) by a new one on the current file, unless it
        was replaced meanwhile; under the apply lock, so no configure or other restart races it.
        False (and the daemon failing) when BIRD keeps dying or the new one does not come up."""
        async with self._apply_lock:
            if self.bird is not p or self._stopping.is_set():
                return True
            now = asyncio.get_running_loop().time()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                self._fail(f"BIRD restarted {len(self.restarts)} times in {RESTART_WINDOW:g} s")
                return False
            self._stop_bird()
            try:
                await self._start_bird()
            except BgpFailed as e:
                self._fail(str(e))
                return False
            return True

    def _fail(self, why: str) -> None:
        """The daemon cannot go on: it stops (BIRD stopped: every route withdrawn at once)."""
        if self._failed is None:
            self._failed = why
        self._stopping.set()

    async def _watch_sessions(self) -> None:
        """Session states for status, and a log line when one changes."""
        while True:
            p = self.bird
            ok, out = await self._birdc("show", "protocols")
            if not ok:
                # Unknown, not the last answer: status must not say Established from memory.
                self.sessions = {}
                if p is not None and p.poll() is None and not self._stopping.is_set():
                    # Alive but deaf (SIGSTOPped, wedged, its socket removed): it cannot be told
                    # anything, and a frozen BIRD's sessions expire at the routers' hold time,
                    # so this host's routes would stay gone until the next change. Replace it.
                    alive, why = await self._birdc("show", "status")
                    if not alive and self.bird is p:
                        log.warning(
                            "%s: BIRD (pid %d) does not answer on %s (%s): restarting it",
                            self.host.name, p.pid, self.ctl, why.strip()[-200:],
                        )  # fmt: skip
                        if not await self._restart_bird(p):
                            return
            if ok:
                now = bird.parse_protocols(out)
                for name, sess in now.items():
                    old = self.sessions.get(name)
                    if old is None or old.established != sess.established:
                        log.info(
                            "%s: BGP session %s: %s",
                            self.host.name,
                            name,
                            sess.info or sess.state,
                        )
                self.sessions = now
            self._restore_addresses()
            await asyncio.sleep(1.0)

    def _restore_addresses(self) -> None:
        """A /32 or /128 someone removed from the VIP interface is added back: a route this host
        announces must reach an address it serves. So is the interface itself, deleted (made
        again, or the daemon stops: its routes would lead to no address) or set down (its
        addresses then accept nothing: set up again)."""
        if self._stopping.is_set():
            return
        name = self.host.vip_interface
        link = subprocess.run(
            ["ip", "-o", "link", "show", "dev", name], capture_output=True, text=True
        )
        if link.returncode != 0 and name == self.host.interface:
            # The uplink itself: the sessions are gone with it (the routers withdraw this
            # host's routes); a dummy by its name would take the real NIC's name when it returns.
            log.warning("%s: interface %s is gone; waiting for it", self.host.name, name)
            return
        if link.returncode != 0:
            log.warning("%s: VIP interface %s is gone: making it again", self.host.name, name)
            try:
                self._vip_interface()
            except BgpFailed as e:
                self._fail(f"VIP interface {name} is gone and cannot be made again: {e}")
                return
        elif "UP" not in link.stdout.split("<", 1)[-1].split(">", 1)[0].split(","):
            log.warning("%s: VIP interface %s was set down: setting it up", self.host.name, name)
            try:
                _ip("link", "set", name, "up")
            except BgpFailed as e:
                self._fail(f"VIP interface {name} is down and cannot be set up: {e}")
                return
        r = subprocess.run(
            ["ip", "-o", "addr", "show", "dev", self.host.vip_interface],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return  # the interface is gone: nothing to compare (it is not ours to recreate here)
        present = set()
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) > 3 and f[2] in ("inet", "inet6"):
                present.add(ip_address(f[3].split("/")[0]))
        missing = [ip for ip in self.announcer.vips if ip not in present]
        if missing and not self._stopping.is_set():
            log.warning(
                "%s: %d VIP addresses were removed from %s (%s...): adding them back",
                self.host.name,
                len(missing),
                self.host.vip_interface,
                missing[0],
            )
            self._set_addresses(add=True, ips=missing)

    # --- addresses -----------------------------------------------------------------------------

    def _vip_interface(self) -> None:
        name = self.host.vip_interface
        r = subprocess.run(["ip", "-o", "link", "show", "dev", name], capture_output=True)
        if r.returncode != 0:
            try:
                _ip("link", "add", name, "type", "dummy")
            except BgpFailed as e:
                raise BgpFailed(
                    f'{e} (no dummy interfaces here: set vip_interface = "lo")'
                ) from None
            log.info("%s: created dummy interface %s for the VIPs", self.host.name, name)
        _ip("link", "set", name, "up")

    def _set_addresses(self, add: bool, ips: list[IPAddress] | None = None) -> None:
        for ip in ips if ips is not None else list(self.announcer.vips):
            addr = ip_interface(f"{ip}/{ip.max_prefixlen}")
            verb = "add" if add else "del"
            argv = ["ip", "addr", verb, str(addr), "dev", self.host.vip_interface]
            if add and ip.version == 6:
                argv.append("nodad")  # usable at once, never "dadfailed"
            r = subprocess.run(argv, capture_output=True, text=True)
            # Already there (after a crash: "exists", or iproute2's newer "already assigned")
            # or already gone: what was asked holds.
            quiet = ("exists", "already assigned", "Cannot assign")
            if r.returncode != 0 and not any(q in r.stderr for q in quiet):
                log.warning("ip addr %s %s: %s", "add" if add else "del", addr, r.stderr.strip())

    # --- control -------------------------------------------------------------------------------

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd in ("drain", "undrain"):
            try:
                ip = drain_target(req, self._stopping.is_set())
            except BadRequest as e:
                return {"ok": False, "error": str(e)}
            if ip is not None and ip not in self.announcer.vips:
                return {"ok": False, "error": f"{self.host.name} takes no part in {ip}"}
            now = asyncio.get_running_loop().time()
            if cmd == "drain":
                self._drain_all = self._drain_all or ip is None
                self.announcer.drain(now, ip)
            else:
                self._drain_all = False  # what stays drained is the per-VIP list
                self.announcer.undrain(now, ip)
            log.info("%s %s", cmd, ip or "every VIP")
            drained = [str(x) for x in self.announcer.drained()]
            answer = drain_answer(drained, self._save_drained())
            await self._apply(cmd)
            self._poke()
            return answer
        if cmd == "reload":
            return await self.reload()
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def reload(self) -> dict[str, Any]:
        """Read the cluster file again: new VIPs wait the hold-down, removed ones are withdrawn,
        the others keep their routes (new ranks are announced at once). One at a time: a storm
        of SIGHUPs is one reload, the others are told so."""
        if self._reloading:
            return {"ok": False, "error": "a reload is already running"}
        self._reloading = True
        try:
            return await self._reload()
        finally:
            self._reloading = False
        self._drain_all = False  # `drain` of every VIP: VIPs a reload adds come drained too
        # VIPs a reload took from this host: their route is withdrawn, their address stays
        # drain_wait more (the router's UPDATE takes ms; packets already sent are answered).
        self._parting: set[IPAddress] = set()
        self._later: set[asyncio.Task[None]] = set()

    async def _reload(self) -> dict[str, Any]:
        path = self.options.cluster_file
        if path is None:
            return {"ok": False, "error": "no cluster file to reload"}
        if self._stopping.is_set():
            return {"ok": False, "error": "stopping: no reload"}
        try:
            # In a thread: the largest file the loader takes needs seconds to check and plan;
            # in the loop it would stall the timers, the control socket and the watchdog pings
            # (systemd would kill the daemon, and BIRD with it: every route gone).
            plan = await asyncio.to_thread(_load_plan, path)
            if plan.cluster.bgp is None:
                raise ClusterError(path, ["[bgp]: missing; a BGP-mode daemon cannot leave it"])
            plan.cluster.host(self.host.name)
        except ClusterError as e:
            log.error("reload refused, still running the old plan: %s", e)
            return {"ok": False, "error": str(e)}
        except KeyError:
            log.error("reload refused, still running the old plan: %s is not in it", self.host.name)
            return {"ok": False, "error": f"{self.host.name} is no longer in {path}"}
        except Exception as e:  # whatever went wrong, the running plan stays
            log.error("reload refused, still running the old plan: %s: %s", type(e).__name__, e)
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        new_host = plan.cluster.host(self.host.name)
        if new_host.vip_interface != self.host.vip_interface:
            # The addresses are on the old interface: moving them is a restart's job (a reload
            # that took the new name would leave them there for good).
            msg = f"vip_interface {self.host.vip_interface} -> {new_host.vip_interface}: restart"
            log.error("reload refused, still running the old plan: %s", msg)
            return {"ok": False, "error": msg}
        old_sessions = bird.config(self.plan.cluster, self.host.name, ())
        if bird.config(plan.cluster, self.host.name, ()) != old_sessions:
            # BIRD restarts a BGP session whose settings change: every route of this host gone
            # at once, with no worst-route step first, and on every host that reloads the file
            # at the same time: each VIP's traffic has nowhere to go until the sessions are up.
            # A restart, host by host, hands over first (make-before-break).
            msg = (
                "the BGP sessions' settings changed (hold_time, bfd, routers, AS or address): "
                "BIRD would reset them all at once; restart the hosts one at a time instead"
            )
            log.error("reload refused, still running the old plan: %s", msg)
            return {"ok": False, "error": msg}
        if self._stopping.is_set():
            return {"ok": False, "error": "stopping: no reload"}
        now = asyncio.get_running_loop().time()
        self.plan = plan
        self.host = new_host
        added, removed = self.announcer.reload(plan, now)
        self.announcer.drain_wait = plan.cluster.bgp.drain_wait  # was kept from the start
        # Checks: kept ones keep their state; a new one starts up (a reload must not touch
        # healthy VIPs; it goes down after `fall` failures like any other).
        health = {}
        for c in plan.checks_for(self.host.name):
            st = self.health.get(c.name)
            if st is None:
                st = CheckState(c, state="up", since=now, detail="added by a reload, not run yet")
            else:
                st.reconfigure(c)
            health[c.name] = st
        self.health = health
        self.checks.update(st.check for st in health.values())
        self.announcer.set_sick(now, self._sick_ips())
        if self._drain_all:  # a host drained for maintenance takes no new VIP either
            for ip in added:
                self.announcer.drain(now, ip)
        self._set_addresses(add=True, ips=added)
        await self._apply("reload")  # the removed routes are withdrawn by this configure
        self._remove_later(removed)
        self._poke()
        log.info("reload: %d VIPs added, %d removed", len(added), len(removed))
        return {
            "ok": True,
            "added": len(added),
            "removed": len(removed),
            "changed": 0,
            "vips_added": [str(x) for x in added],
            "vips_removed": [str(x) for x in removed],
        }

    def _state_file(self) -> Path | None:
        return drained_state.path_for(self.options.state_dir, self.host.name)

    def _save_drained(self) -> str | None:
        """Save the drained state (the same file as CARP mode's); what went wrong, if anything."""
        state = drained_state.Drained(self._drain_all, tuple(self.announcer.drained()))
        return drained_state.save_or_error(self._state_file(), state)

    def _restore_drained(self, now: float) -> None:
        """Drain what was drained when the daemon last ran (before anything is announced). A
        file that cannot be used is logged and ignored: the host takes part normally."""
        state = drained_state.load_or_log(self._state_file())
        if state is None:
            return
        self._drain_all = state.all
        known = self.announcer.vips.__contains__
        for ip in drained_state.to_drain(state, known, "is not a VIP of this host"):
            self.announcer.drain(now, ip)

    def _remove_later(self, ips: list[IPAddress]) -> None:
        """Remove these VIPs' addresses after drain_wait, unless a reload brought them back."""
        if not ips:
            return
        self._parting |= set(ips)

        async def later() -> None:
            await asyncio.sleep(self.announcer.drain_wait)
            gone = [ip for ip in ips if ip in self._parting and ip not in self.announcer.vips]
            self._parting -= set(ips)
            self._set_addresses(add=False, ips=gone)

        task = asyncio.ensure_future(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def status(self) -> dict[str, Any]:
        families = {
            bird.protocol_name(i): r.address.version
            for i, r in enumerate(self.plan.cluster.routers_of(self.host.name))
        }
        doc = {
            "mode": "bgp",
            "host": self.host.name,
            "asn": self.plan.cluster.asn_of(self.host.name),
            "sessions": {
                name: {
                    "state": s.state,
                    "info": s.info,
                    "established": s.established,
                    "family": families.get(name, 4),
                }
                for name, s in self.sessions.items()
            },
            "speaker": {
                "pid": self.bird.pid if self.bird else None,
                "restarts": len(self.restarts),
                "configures": self.configures,
            },
            "vips": self.announcer.status(),
            "checks": {
                name: {"state": st.state, "detail": st.detail} for name, st in self.health.items()
            },
        }
        doc["level"], doc["problems"] = bgp_status.level_and_problems(doc)
        return doc

    def _log_status(self) -> None:
        st = self.status()
        for v in st["vips"]:
            log.info("status %s: %s rank %s med %s", v["prefix"], v["state"], v["rank"],
                     v.get("med", "-"))  # fmt: skip
        for name, s in st["sessions"].items():
            log.info("status session %s: %s", name, s["info"] or s["state"])


class BgpCollector(Collector):
    """BGP mode's metrics, read from the daemon at each scrape."""

    def __init__(self, daemon: BgpDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[Metric]:
        d = self.daemon
        up = GaugeMetricFamily(
            "iprotate_bgp_session_up", "1 if the BGP session is Established", labels=["session"]
        )
        for name, sess in d.sessions.items():
            up.add_metric([name], 1.0 if sess.established else 0.0)
        state = GaugeMetricFamily(
            "iprotate_bgp_vip_state",
            "1 for the state each VIP's route is in here (waiting, announced, leaving, withdrawn)",
            labels=["vip", "state"],
        )
        med = GaugeMetricFamily(
            "iprotate_bgp_vip_med",
            "the MED announced for the VIP (absent: withdrawn)",
            labels=["vip"],
        )
        for v in d.announcer.status():
            for st in ("waiting", "announced", "leaving", "withdrawn"):
                state.add_metric([str(v["vip"]), st], 1.0 if v["state"] == st else 0.0)
            if "med" in v:
                med.add_metric([str(v["vip"])], float(v["med"]))  # type: ignore[arg-type]
        restarts = CounterMetricFamily(
            "iprotate_bgp_speaker_restarts", "times BIRD was restarted (dead or deaf)"
        )
        restarts.add_metric([], float(len(d.restarts)))
        configures = CounterMetricFamily(
            "iprotate_bgp_configures", "configurations written and loaded into BIRD"
        )
        configures.add_metric([], float(d.configures))
        return [up, state, med, restarts, configures]


def serve_bgp_metrics(address: str, daemon: BgpDaemon) -> Any:
    """Serve BGP mode's metrics on `address` (as [run] metrics: "127.0.0.1:9650")."""
    host, port = parse_address(address)
    registry = CollectorRegistry()
    registry.register(BgpCollector(daemon))
    server, _thread = start_http_server(port, host or "0.0.0.0", registry)
    log.info("metrics: serving on %s", address)
    return server


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise BgpFailed(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _leftover_pid(pidfile: Path, ctl: Path) -> int | None:
    """The pid in BIRD's pid file, if that process is a BIRD on `ctl` (a pid file outlives its
    process, and its number may be another process's by now)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or str(ctl).encode() not in argv or b"-s" not in argv:
        return None
    return pid


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _no_demote() -> None:
    log.info("SIGUSR2: no demote in BGP mode; use `iprotate drain`")


def _load_plan(path: str) -> Plan:
    return make_plan(load_cluster(path))


def _med(m: int | None) -> str:
    return "withdrawn" if m is None else f"med {m}"


def _routes_of(text: str | None) -> list[Any]:
    """The (prefix, med) pairs in a config we wrote (for the log line of a change)."""
    if not text:
        return []
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) > 4 and f[0] == "route" and "bgp_med" in line:
            med = int(line.split("bgp_med = ", 1)[1].split(";", 1)[0])
            out.append(_Route(f[1], med))
    return out


@dataclass(frozen=True)
class _Route:
    prefix: str
    med: int
