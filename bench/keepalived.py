"""The same cluster under keepalived (Debian's package), for the failover benchmark.

`keepalived_conf` turns an iprotate plan into one keepalived.conf per host: one `vrrp_instance` per
VIP the host takes part in, virtual_router_id = the plan's vhid, priorities strictly decreasing
along the plan's failover order (so VRRP elects the same owner and the same next-in-line), preempt
on, advert_int = the plan's advbase. Plain multicast VRRPv2 on the lab's bridge, no authentication
(VRRPv3 has none and keepalived warns against v2's), no scripts: keepalived adds and removes the
addresses itself and sends its own gratuitous ARPs.

`KeepalivedLab` is a `Lab` whose hosts run keepalived instead of `iprotate run`; it keeps the lab's
segment, client and fault model (kill = SIGKILL + cable out, stop = SIGTERM, restore).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from iprotate.lab.lab import Lab
from iprotate.lab.netns import Segment
from iprotate.plan.model import Plan

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
TOP_PRIORITY = 250  # below 255, which keepalived reserves for the address owner (instant master)
MAX_STEP = 50


def priority(rank: int, participants: int) -> int:
    """The VRRP priority of the host at `rank` (0 = owner) in a VIP's order: strictly decreasing,
    always within 1..254. 250, 200, 150 for three hosts."""
    if not 0 <= rank < participants:
        raise ValueError(f"rank {rank} outside 0..{participants - 1}")
    step = min(MAX_STEP, (TOP_PRIORITY - 1) // max(1, participants - 1))
    return TOP_PRIORITY - step * rank


def keepalived_conf(plan: Plan, host: str) -> str:
    """keepalived.conf for `host`: one vrrp_instance per VIP it takes part in, in plan order."""
    c = plan.cluster
    if c.advbase < 1:
        # VRRPv2's advert_int is whole seconds; keepalived's sub-second adverts need VRRPv3,
        # whose timers differ from CARP's, so the comparison would not be like for like.
        raise ValueError("keepalived runs the plan with advbase >= 1 only")
    h = c.host(host)
    lines = [
        f"# Written by bench/keepalived.py from the iprotate plan of {c.path}: host {host}.",
        "global_defs {",
        f"    router_id {host}",
        "}",
    ]
    for v in plan.for_host(host):
        rank = v.order.index(host)
        lines += [
            "",
            f"# {v.address}: order {' > '.join(v.order)}",
            f"vrrp_instance VI_{v.vhid} {{",
            "    state BACKUP",  # every host starts as backup and the election decides, as in CARP
            f"    interface {h.interface}",
            f"    virtual_router_id {v.vhid}",
            f"    priority {priority(rank, len(v.order))}",
            f"    advert_int {c.advbase}",
            "    virtual_ipaddress {",
            f"        {v.address} dev {h.vip_interface}",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def master_down(advert_int: int, prio: int) -> float:
    """VRRPv2's Master_Down_Interval for a backup of priority `prio` (RFC 3768 6.1):
    3 * Advertisement_Interval + Skew_Time, Skew_Time = (256 - Priority) / 256."""
    return 3 * advert_int + (256 - prio) / 256


class KeepalivedLab(Lab):
    """A lab whose hosts run keepalived with `keepalived_conf`.

    keepalived runs as a parent and a VRRP child (forked even with --dont-fork). The parent is the
    process the lab spawned and tracks; the child's PID comes from the --vrrp_pid file, and is
    checked to be the parent's child before it is signalled.
    """

    def start(self, name: str) -> None:
        conf = self.workdir / f"{name}.keepalived.conf"
        conf.write_text(self.conf(name))
        run = self.run_dir(name)
        run.mkdir(parents=True, exist_ok=True)
        for f in run.iterdir():  # a killed run's pid files would make it refuse to start
            f.unlink()
        argv = [
            KEEPALIVED,
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--dont-respawn",  # a killed VRRP child must stay dead, as the host is meant to be
            "--use-file", str(conf),
            "--pid", str(run / "keepalived.pid"),
            "--vrrp_pid", str(run / "vrrp.pid"),
        ]  # fmt: skip
        self.procs[name] = [self.seg.spawn(name, argv, log=str(self.workdir / f"{name}.log"))]

    def conf(self, name: str) -> str:
        """The host's keepalived.conf (a subclass adds to it: bench/service.py's track_script)."""
        return keepalived_conf(self.plan, name)

    def run_dir(self, name: str) -> Path:
        """Where this host's keepalived keeps its pid files (one directory per namespace, so
        the three daemons never see each other's)."""
        return self.workdir / f"{name}.run"

    def vrrp_child(self, name: str) -> int | None:
        """The PID of the host's VRRP child process, if it runs."""
        parents = {p.pid for p in self.procs.get(name, []) if p.poll() is None}
        try:
            pid = int((self.run_dir(name) / "vrrp.pid").read_text().split()[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError, IndexError):
            return None
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        return pid if ppid in parents else None

    def pids(self, name: str) -> list[int]:
        """Every process of the host's keepalived, the VRRP child first."""
        child = self.vrrp_child(name)
        own = [p.pid for p in self.procs.get(name, []) if p.poll() is None]
        return ([child] if child is not None else []) + own

    def kill(self, name: str) -> None:
        """A hard failure. The VRRP child dies first: killed after its parent, it would get the
        parent-death signal, shut down cleanly and send priority-0 adverts (a clean stop)."""
        child = self.vrrp_child(name)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        for p in self.procs.pop(name, []):
            Segment.stop(p, signal.SIGKILL)
        self.seg.link(name, False)
