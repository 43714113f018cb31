"""A lab whose hosts run Debian's keepalived instead of `iprotate run`.

Each host's keepalived.conf comes from :func:`iprotate.export.keepalived.keepalived_conf`, the
generator behind `iprotate keepalived`; the lab keeps its segment, client and fault model (kill =
SIGKILL + cable out, stop = SIGTERM, restore). The failover benchmark and the keepalived tests
use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from iprotate.export.keepalived import KeepalivedOptions, keepalived_conf
from iprotate.lab.lab import Lab
from iprotate.lab.netns import Segment

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


@dataclass
class KeepalivedLab(Lab):
    """A lab whose hosts run keepalived on the configuration `iprotate keepalived` generates.

    keepalived runs as a parent and a VRRP child (forked even with --dont-fork). The parent is the
    process the lab spawned and tracks; the child's PID comes from the --vrrp_pid file, and is
    checked to be the parent's child before it is signalled.
    """

    keepalived_options: KeepalivedOptions = field(default_factory=KeepalivedOptions)

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
        """The host's keepalived.conf (a subclass adds to it: the service bench's track_script)."""
        return keepalived_conf(self.plan, name, self.keepalived_options)

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
