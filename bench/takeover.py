"""Takeover benchmark: the work per VIP when a host takes it over (target: address + gratuitous ARP
under 2 ms), measured in a network namespace with the daemon's own code.

    sudo .venv/bin/python bench/takeover.py [--vips 254] [--rounds 5] [--out DIR]

One throw-away `Segment` with one member (`alpha`, eth1, 198.51.100.1); inside it a worker
process (this script, `--worker`) builds the real `Daemon` for a cluster file whose VIPs are all
owned by alpha and drives the daemon's own effect path (`Daemon._apply`, `Daemon._execute`,
`AsyncIPRoute`, `GarpSender`, `CarpSocket`), nothing reimplemented. Per round it measures:

- ``add_garp``: `AddAddress` then `SendGarp` for one VIP, as the executor applies them (the
  target: under 2 ms per VIP);
- ``del``: `DelAddress` for one VIP;
- ``takeover``: every VIP's master-down timer expires at once (`Node.timers`), and the whole batch
  (Transition log line, address, gratuitous ARP, first advert, per VIP) goes through the
  executor task, as after a host death; per VIP the daemon's own `takeover_seconds`
  (Transition -> advert sent), the time to compute the batch, and the time until the last VIP's
  advert is out;
- ``stop``: the clean stop (farewell advert and address removal for every VIP);
- per action type inside the takeover batch (`Daemon._apply` wrapped with a timer), and, as a
  reference only, the kernel's own cost of an address add/delete (a hand-built netlink request
  on a raw socket; not the daemon's path).

Only 203.0.113.0/24 VIPs and a 198.51.100.0/24 host address, inside namespaces this run makes
and removes (also on errors). Prints JSON lines and writes takeover.json and takeover.md into
--out (default bench/results). Figures are indicative: a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VIP_PREFIX = "203.0.113"
HOST = "alpha"
HOST_ADDRESS = "198.51.100.1"
INTERFACE = "eth1"
PASSWORD = "bench-secret"


def cluster_toml(vips: int) -> str:
    """Two hosts (only alpha exists here), `vips` VIPs from 203.0.113.1 owned by alpha, split
    over two multicast groups when there are more than 127."""
    if not 1 <= vips <= 254:
        raise ValueError("1..254 VIPs: the VIPs must come from 203.0.113.0/24")
    lines = [
        "[cluster]",
        f'interface = "{INTERFACE}"',
        'password_file = "password"',
        "advbase = 1",
        "dead_ratio = 3",
        "",
        "[[hosts]]",
        f'name = "{HOST}"',
        f'address = "{HOST_ADDRESS}"',
        "",
        "[[hosts]]",
        'name = "bravo"',
        'address = "198.51.100.2"',
    ]
    half = min(vips, 127)
    ranges = [(1, half, "224.0.0.18")]
    if vips > half:
        ranges.append((half + 1, vips, "224.0.0.19"))
    for first, last, group in ranges:
        lines += [
            "",
            "[[vips]]",
            f'pool = "{VIP_PREFIX}.{first}-{VIP_PREFIX}.{last}/24"',
            f'group = "{group}"',
            f'owner = "{HOST}"',
        ]
    return "\n".join(lines) + "\n"


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p99/max/mean of durations in seconds, reported in milliseconds."""
    s = sorted(samples)
    if not s:
        return {}
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s) * 1e3, 3),
        "p99_ms": round(p99 * 1e3, 3),
        "max_ms": round(s[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(s) * 1e3, 3),
    }


# --- the worker, inside the namespace -------------------------------------------------------------


async def _worker(cluster_file: str, rounds: int, log_file: str) -> dict[str, Any]:
    """Drive the daemon's effect path for every VIP, `rounds` times; raw samples in seconds."""
    from pyroute2 import AsyncIPRoute

    from iprotate.carp import AddAddress, DelAddress, SendGarp
    from iprotate.config import load_cluster
    from iprotate.daemon import Daemon, RunOptions
    from iprotate.node import Effect
    from iprotate.planner import make_plan

    # As `iprotate run` logs (the Transition lines are part of the takeover work).
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        filename=log_file,
    )
    plan = make_plan(load_cluster(cluster_file))
    daemon = Daemon(plan, HOST, RunOptions())
    vips = [v for v in plan.vips if v.owner == HOST]
    loop = asyncio.get_running_loop()
    ipr = AsyncIPRoute()
    out: dict[str, Any] = {"add_garp": [], "add": [], "garp": [], "del": [], "rounds": []}
    out["by_action"] = {}
    try:
        daemon._adv_index, _ = await daemon._link(ipr, daemon.host.interface)
        daemon._vip_index, _ = await daemon._link(ipr, daemon.host.vip_interface)
        await daemon._cleanup(ipr)
        daemon._open_sockets()  # the CARP sockets and the GarpSender, as `run` opens them
        for _ in range(rounds):
            # 1. address + gratuitous ARP, one VIP at a time, through Daemon._apply.
            for v in vips:
                t0 = time.perf_counter()
                await daemon._apply(ipr, Effect(v, AddAddress()))
                t1 = time.perf_counter()
                await daemon._apply(ipr, Effect(v, SendGarp()))
                t2 = time.perf_counter()
                out["add"].append(t1 - t0)
                out["garp"].append(t2 - t1)
                out["add_garp"].append(t2 - t0)
            for v in vips:
                t0 = time.perf_counter()
                await daemon._apply(ipr, Effect(v, DelAddress()))
                out["del"].append(time.perf_counter() - t0)

            # 2. a whole takeover: every machine BACKUP, then all master-down timers expire.
            node = daemon.node
            now = loop.time()
            start_batch = node.start(now)
            await _run_executor(daemon, ipr, start_batch)
            node.takeover_seconds.clear()
            t0 = time.perf_counter()
            batch = node.timers(now + 3600.0)
            t1 = time.perf_counter()
            daemon._apply = _timed(daemon._apply, out["by_action"])  # the executor calls it
            try:
                await _run_executor(daemon, ipr, batch)
            finally:
                del daemon._apply  # back to the class's method
            t2 = time.perf_counter()
            per_vip = list(node.takeover_seconds.values())
            held = await _count_held(ipr, daemon._vip_index, {str(v.ip) for v in vips})

            # 3. the clean stop: farewell adverts and every address removed.
            t3 = time.perf_counter()
            stop_batch = node.stop(loop.time())
            await _run_executor(daemon, ipr, stop_batch)
            t4 = time.perf_counter()
            out["rounds"].append(
                {
                    "effects": len(batch),
                    "compute_s": t1 - t0,
                    "execute_s": t2 - t1,
                    "per_vip_s": per_vip,
                    "held_after": held,
                    "stop_s": t4 - t3,
                    "stop_effects": len(stop_batch),
                }
            )
        out["errors"] = daemon.node.counters.get("errors", 0)
        out["floor_add"], out["floor_del"] = _netlink_floor(daemon._vip_index, vips, rounds)
    finally:
        for s in daemon.sockets.values():
            loop.remove_reader(s.fileno())
            s.close()
        if daemon.garp is not None:
            daemon.garp.close()
        ipr.close()
    return out


def _timed(apply: Any, into: dict[str, list[float]]) -> Any:
    """`Daemon._apply` with the time of each call recorded by action type."""

    async def timed(ipr: Any, e: Any) -> None:
        t0 = time.perf_counter()
        try:
            await apply(ipr, e)
        finally:
            into.setdefault(type(e.action).__name__, []).append(time.perf_counter() - t0)

    return timed


def _netlink_floor(index: int, vips: list[Any], rounds: int) -> tuple[list[float], list[float]]:
    """Reference only, not the daemon's path: the kernel's own cost of one address add and
    delete, as a hand-built RTM_NEWADDR/RTM_DELADDR on a raw netlink socket, one at a time,
    each waiting for its ack. What is left above this in `add` is the Python side."""
    nl_request, nl_ack, nl_excl, nl_create = 0x1, 0x4, 0x200, 0x400
    rtm_newaddr, rtm_deladdr, ifa_address, ifa_local = 20, 21, 1, 2

    def message(kind: int, flags: int, seq: int, v: Any) -> bytes:
        ip = v.ip.packed
        attrs = struct.pack("=HH4s", 8, ifa_local, ip) + struct.pack("=HH4s", 8, ifa_address, ip)
        body = struct.pack("=BBBBI", socket.AF_INET, v.address.network.prefixlen, 0, 0, index)
        body += attrs
        return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body

    add: list[float] = []
    delete: list[float] = []
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        s.bind((0, 0))
        seq = 0
        for _ in range(rounds):
            for kind, flags, into in (
                (rtm_newaddr, nl_request | nl_ack | nl_create | nl_excl, add),
                (rtm_deladdr, nl_request | nl_ack, delete),
            ):
                for v in vips:
                    seq += 1
                    t0 = time.perf_counter()
                    s.send(message(kind, flags, seq, v))
                    s.recv(65536)
                    into.append(time.perf_counter() - t0)
    finally:
        s.close()
    return add, delete


async def _run_executor(daemon: Any, ipr: Any, batch: list[Any]) -> None:
    """One batch through the daemon's own executor task, to its end."""
    daemon._effects.put_nowait(batch)
    daemon._effects.put_nowait(None)
    await daemon._execute(ipr)


async def _count_held(ipr: Any, index: int, wanted: set[str]) -> int:
    from iprotate.daemon import _collect

    msgs = await _collect(ipr.addr("dump", index=index, family=2))
    return sum(1 for m in msgs if m.get_attr("IFA_ADDRESS") in wanted)


# --- the driver -----------------------------------------------------------------------------------


def run(vips: int, rounds: int) -> list[dict[str, Any]]:
    """Build the segment, run the worker in it, summarise; everything removed on return."""
    from iprotate.netns import Segment

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="iprotate-takeover-") as tmp:
        work = Path(tmp)
        cluster = work / "cluster.toml"
        cluster.write_text(cluster_toml(vips))
        pw = work / "password"
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
        with Segment() as seg:
            seg.add(HOST, 1, INTERFACE)
            argv = [sys.executable, os.path.abspath(__file__), "--worker", str(cluster)]
            argv += ["--rounds", str(rounds), "--log", str(work / "worker.log")]
            raw = json.loads(seg.run(HOST, *argv))
            left = seg.addresses(HOST)
        base = {
            "bench": "takeover",
            "vips": vips,
            "rounds": rounds,
            "machine": _machine(),
            "revision": revision(),
        }
        results.append({**base, "what": "add_garp", **summary(raw["add_garp"]), "target_ms": 2.0})
        results.append({**base, "what": "add", **summary(raw["add"])})
        results.append({**base, "what": "garp", **summary(raw["garp"])})
        results.append({**base, "what": "del", **summary(raw["del"])})
        for action, samples in sorted(raw["by_action"].items()):
            results.append(
                {
                    **base,
                    "what": f"in_batch_{action}",
                    "detail": f"{action} effects of the takeover batch, through Daemon._apply",
                    **summary(samples),
                }
            )
        for what in ("floor_add", "floor_del"):
            results.append(
                {
                    **base,
                    "what": what,
                    "detail": "reference, not the daemon: hand-built netlink request + ack",
                    **summary(raw[what]),
                }
            )
        per_vip = [s for r in raw["rounds"] for s in r["per_vip_s"]]
        results.append(
            {
                **base,
                "what": "takeover_per_vip",
                "detail": "Transition -> first advert sent, per VIP (daemon's takeover_seconds)",
                **summary(per_vip),
            }
        )
        results.append(
            {
                **base,
                "what": "takeover_batch",
                "detail": f"all {vips} VIPs at once: compute, executor until the last advert",
                "compute_ms": summary([r["compute_s"] for r in raw["rounds"]]),
                "execute_ms": summary([r["execute_s"] for r in raw["rounds"]]),
                "effects_per_round": raw["rounds"][0]["effects"],
                "held_after_takeover": [r["held_after"] for r in raw["rounds"]],
                "errors": raw["errors"],
            }
        )
        results.append(
            {
                **base,
                "what": "stop_batch",
                "detail": "clean stop: farewell advert + address removal for every VIP",
                **summary([r["stop_s"] for r in raw["rounds"]]),
                "addresses_left": len([a for a in left if a.startswith(VIP_PREFIX + ".")]),
            }
        )
    return results


def revision() -> str:
    """The commit measured, with "+dirty" when iprotate/ has uncommitted changes."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--", "iprotate") else "")


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a markdown page."""
    r0 = results[0]
    by = {r["what"]: r for r in results}
    labels = {
        "add_garp": "**address + gratuitous ARP** (`AddAddress`, `SendGarp`), one VIP at a time",
        "add": "address add alone (`Daemon._addr` via `AsyncIPRoute`)",
        "garp": "gratuitous ARP alone (`GarpSender.send`)",
        "del": "address delete (`DelAddress`)",
        "in_batch_Transition": "in a takeover batch: `Transition` (the log line)",
        "in_batch_AddAddress": "in a takeover batch: `AddAddress`",
        "in_batch_SendGarp": "in a takeover batch: `SendGarp`",
        "in_batch_SendAdvert": "in a takeover batch: `SendAdvert` (encode + send)",
        "takeover_per_vip": "in a takeover batch: Transition -> first advert (`takeover_seconds`)",
        "floor_add": "reference, not the daemon: raw netlink RTM_NEWADDR + ack",
        "floor_del": "reference, not the daemon: raw netlink RTM_DELADDR + ack",
    }
    lines = [
        "# Takeover work per VIP",
        "",
        f"Command: `python bench/takeover.py --vips {r0['vips']} --rounds {r0['rounds']}`. "
        "One namespace (one member, `eth1`); the worker builds the real `Daemon` and drives its "
        "own `_apply`/`_execute` with `AsyncIPRoute`, `GarpSender` and `CarpSocket`. "
        f"Revision {r0['revision']}. Machine: {r0['machine']}, shared with other jobs: "
        "indicative figures.",
        "",
        "Target: address + gratuitous ARP under 2 ms per VIP.",
        "",
        "| per VIP | n | p50 ms | p99 ms | max ms | mean ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for what, label in labels.items():
        r = by.get(what)
        if r is not None and "p50_ms" in r:
            lines.append(
                f"| {label} | {r['n']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} "
                f"| {r['mean_ms']} |"
            )
    batch, stop = by["takeover_batch"], by["stop_batch"]
    lines += [
        "",
        f"| whole batch of {r0['vips']} VIPs | rounds | p50 ms | max ms |",
        "|---|---:|---:|---:|",
        f"| takeover: `Node.timers` computes the effects ({batch['effects_per_round']}) "
        f"| {batch['compute_ms']['n']} | {batch['compute_ms']['p50_ms']} "
        f"| {batch['compute_ms']['max_ms']} |",
        f"| takeover: the executor carries them out, until the last VIP's advert "
        f"| {batch['execute_ms']['n']} | {batch['execute_ms']['p50_ms']} "
        f"| {batch['execute_ms']['max_ms']} |",
        f"| clean stop: farewell advert + address removal, every VIP | {stop['n']} "
        f"| {stop['p50_ms']} | {stop['max_ms']} |",
        "",
        f"VIPs held after each takeover round: {batch['held_after_takeover']}; executor errors: "
        f"{batch['errors']}; VIPs left after the last stop: {stop['addresses_left']}.",
        "",
        "The executor applies a batch's effects one after the other, so when every VIP's timer "
        "fires at once (a dead owner's adverts all arrived in one burst) the last VIP is served "
        "the whole batch time after the first; nearly all of it is the address add, whose "
        "kernel part (raw netlink row) is a few microseconds.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vips", type=int, default=254, help="1..254 (203.0.113.1 upwards)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--out", default=str(RESULTS), help="where takeover.json and takeover.md go ('' for none)"
    )
    ap.add_argument("--worker", metavar="CLUSTER", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker, args.rounds, args.log or os.devnull))))
        return
    from iprotate.netns import NetnsError

    if os.geteuid() != 0:
        sys.exit("bench/takeover.py needs root (network namespaces)")
    try:
        results = run(args.vips, args.rounds)
    except NetnsError as e:
        sys.exit(f"worker failed: {e}")
    for r in results:
        print(json.dumps(r))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "takeover.json").write_text("".join(json.dumps(r) + "\n" for r in results))
        (out / "takeover.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
