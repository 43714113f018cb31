"""BGP mode against what users run today: ExaBGP's healthcheck helper with hand-set MEDs.

The same lab in one run for each side (iprotate.lab.bgplab: 3 hosts in AS 64513, a BIRD 2
router in AS 64512, a client behind it pinging every 10 ms), the same 12 VIPs and the same MEDs
(the plan's: 100 for the owner, 200 and 300 for the backups):

- exabgp: each host runs ExaBGP with three `exabgp healthcheck` processes (one per MED: the VIPs
  the host owns, those it backs up first, second), checking a flag file every second (rise 1,
  fall 1, withdraw on down); a drain is the helper's disable file (the routes get MED 2**32-1).
- iprotate: `iprotate run` in BGP mode (BIRD 2), without and with BFD.

Faults, each measured as the time until the router's best path for every VIP is the plan's
next host, and the pings to one of the failed host's VIPs lost on the way:
- killed host: its processes SIGKILLed and its cable pulled at once (a dead machine);
- failed service: the service behind the VIPs stops (ExaBGP: its flag file goes; iprotate: the
  HTTP service its health check asks goes; both checks every 1 s, fall 1, rise 1);
- drain: the operator moves the host's traffic away (ExaBGP: disable file; iprotate: drain).

    sudo .venv/bin/python bench/bgp.py [--out bench/results/bgp.json]

Only namespaces of its own, lab addresses and private ASNs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from iprotate.cluster.loader import load_cluster
from iprotate.lab.bgplab import HOSTS_AS, ROUTER_ADDRESS, ROUTER_AS, BgpLab
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

VIPS = 12
SERVICE = str(Path(__file__).resolve().parent.parent / "tests" / "check_service.py")
CHECK = ('\n[[checks]]\nname = "web"\nhttp = "http://127.0.0.1:8080/"\ninterval = 1.0\n'
         "timeout = 0.5\nfall = 1\nrise = 1\n")  # fmt: skip
HEALTHCHECK = (
    "{python} -m exabgp healthcheck --no-syslog --interval 1 --fast-interval 1 "
    "--rise 1 --fall 1 --command 'test -f {flag}' --disable {disable} --next-hop {nexthop} "
    "--withdraw-on-down --no-ip-setup --up-metric {med} --disabled-metric 4294967295 {ips}"
)


class ExaLab(BgpLab):
    """The same lab, each host running ExaBGP and its healthcheck helper instead of iprotate."""

    def start(self, name: str) -> subprocess.Popen[bytes]:
        plan = make_plan(load_cluster(self.cluster_file))
        d = self.dir / name
        d.mkdir(exist_ok=True)
        flag, disable = d / "service-up", d / "disabled"
        flag.touch()
        host = plan.cluster.host(name)
        for v in plan.for_host(name):
            self.seg.run(name, "ip", "addr", "replace", f"{v.ip}/32", "dev", "lo")
        procs = []
        for rank in range(3):
            ips = " ".join(f"--ip {v.ip}" for v in plan.for_host(name) if v.rank(name) == rank)
            if not ips:
                continue
            cmd = HEALTHCHECK.format(python=sys.executable, flag=flag, disable=disable,
                                     nexthop=host.address, med=100 + 100 * rank,
                                     ips=ips)  # fmt: skip
            procs.append(f"process rank{rank} {{\n    run {cmd};\n    encoder text;\n}}")
        names = ", ".join(f"rank{r}" for r in range(3) if f"process rank{r} " in "".join(procs))
        conf = d / "exabgp.conf"
        conf.write_text(
            "\n".join(procs) + f"\nneighbor {ROUTER_ADDRESS} {{\n    router-id {host.address};\n"
            f"    local-address {host.address};\n    local-as {HOSTS_AS};\n"
            f"    peer-as {ROUTER_AS};\n    hold-time {self.hold_time};\n"
            f"    api {{ processes [ {names} ]; }}\n}}\n"
        )
        env = os.environ | {"exabgp_daemon_user": "root", "exabgp_log_destination": str(d / "log")}
        exa = str(Path(sys.executable).with_name("exabgp"))
        p = self.seg.spawn(name, [exa, "server", str(conf)], log=str(d / "exabgp.out"), env=env)
        self.procs[name] = p
        return p

    def fail_service(self, name: str, failed: bool = True) -> None:
        flag = self.dir / name / "service-up"
        if failed:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()

    def drain(self, name: str, drained: bool = True) -> None:
        f = self.dir / name / "disabled"
        if drained:
            f.touch()
        else:
            f.unlink(missing_ok=True)


def holders(plan: Plan, down: tuple[str, ...] = ()) -> dict[str, str | None]:
    return {f"{v.ip}/32": v.holder(down) for v in plan.vips}


def measure(lab: BgpLab, plan: Plan, victim: str, act: Any, limit: float = 20.0) -> dict[str, Any]:
    """Do `act`, then time the router's move to the plan without `victim`; pings lost."""
    vip = next(str(v.ip) for v in plan.vips if v.owner == victim)
    want = holders(plan, (victim,))
    pinger = lab.pinger(vip)
    time.sleep(0.5)
    t0 = time.monotonic()
    act()
    try:
        moved: float | None = lab.wait(lambda: lab.best() == want, timeout=limit, step=0.01)
    except TimeoutError:
        moved = None
    time.sleep(0.5)
    sent, got = lab.ping_result(pinger)
    return {
        "moved_ms": None if moved is None else round(moved * 1000),
        "pings_sent": sent,
        "pings_lost": sent - got,
        "wall_s": round(time.monotonic() - t0, 2),
    }


def settle(lab: BgpLab, plan: Plan) -> None:
    lab.wait(lambda: lab.best() == holders(plan), timeout=40)
    lab.wait(lambda: all(len(ps) == 3 for ps in lab.routes().values()), timeout=40)


def run_side(kind: str, bfd: bool, workdir: Path) -> dict[str, Any]:
    cls = ExaLab if kind == "exabgp" else BgpLab
    lab = cls(hosts=3, vips=VIPS, bfd=bfd, hold_time=3, workdir=str(workdir / f"{kind}-{bfd}"),
              hold_down=1.0, drain_wait=1.0, checks="" if kind == "exabgp" else CHECK)  # fmt: skip
    out: dict[str, Any] = {"side": kind, "bfd": bfd}
    with lab:
        services = {}
        if kind != "exabgp":
            services = {h: lab.seg.spawn(h, [sys.executable, SERVICE, "8080"]) for h in lab.names}
        plan = make_plan(load_cluster(lab.cluster_file))
        lab.wait(lambda: len(lab.sessions_up()) == 3, 40)
        settle(lab, plan)
        a, b, c = lab.names

        def kill_host() -> None:
            # The cable first: a dead machine sends nothing, not even its kernel's FIN or a
            # speaker's Cease.
            lab.link(a, False)
            for pid in lab.host_pids(a):
                os.kill(pid, signal.SIGKILL)

        out["killed host"] = measure(lab, plan, a, kill_host)
        lab.procs[a].wait(10)
        lab.link(a, True)
        lab.start(a)
        if a in services:
            services[a] = lab.seg.spawn(a, [sys.executable, SERVICE, "8080"])
        settle(lab, plan)
        if isinstance(lab, ExaLab):
            out["failed service"] = measure(lab, plan, b, lambda: lab.fail_service(b))
            lab.fail_service(b, False)
            settle(lab, plan)
            out["drain"] = measure(lab, plan, c, lambda: lab.drain(c))
            lab.drain(c, False)
        else:
            out["failed service"] = measure(lab, plan, b, lambda: lab.seg.stop(services[b]))
            services[b] = lab.seg.spawn(b, [sys.executable, SERVICE, "8080"])
            settle(lab, plan)
            out["drain"] = measure(lab, plan, c, lambda: lab.ask(c, "drain"))
            lab.ask(c, "undrain")
        settle(lab, plan)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/bgp.json")
    ap.add_argument("--workdir", default="/tmp/iprotate-bench-bgp")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = [run_side("exabgp", False, work), run_side("iprotate", False, work),
               run_side("iprotate", True, work)]  # fmt: skip
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
