"""Takeover benchmark: the work per VIP when a host takes it over (target: address + gratuitous ARP
under 2 ms), measured in a network namespace with the daemon's own code.

    sudo .venv/bin/python bench/takeover.py [--vips 254] [--rounds 5] [--out DIR]

One throw-away `Segment` with one member (`alpha`, eth1, 198.51.100.1); inside it a worker
process (this script, `--worker`) builds the real `Daemon` for a cluster file whose VIPs are all
owned by alpha, sets it up as `Daemon.run` does (`AddressSetter`, `GarpSender`, `CarpSocket`)
and drives the daemon's own effect path (`Daemon._apply`, `Daemon._emit`), nothing
reimplemented. Per round it measures:

- ``add_garp``: `AddAddress` then `SendGarp` for one VIP, through `Daemon._apply` (the target:
  under 2 ms per VIP); ``add`` and ``garp`` alone;
- ``del``: `DelAddress` for one VIP;
- ``takeover``: every VIP's master-down timer expires at once (`Node.timers`) and the whole batch
  (Transition log line, address, gratuitous ARP, first advert, per VIP) goes through
  `Daemon._emit`, as after a host death; per VIP the daemon's own `takeover_seconds`
  (Transition -> advert sent) and the time of each action (`Daemon._apply` wrapped with a
  timer); the time to compute the batch, and until the last VIP's advert is out;
- ``stop``: the last step of a clean stop (farewell advert and address removal, every VIP);
- as a reference only, pyroute2's `AsyncIPRoute.addr` add and delete, awaited one at a time
  (the daemon's path before iprotate.engine.addresses).

The VIPs share one /24: the first one added is the subnet's primary address and the others are
secondaries, and with the kernel's default `promote_secondaries=0` deleting the primary deletes
every secondary with it (so each later delete finds nothing). The namespace gets
`net.ipv4.conf.eth1.promote_secondaries=1` unless --no-promote-secondaries, so every delete
measured removes one VIP; ``del`` reports how many deletes found their address.

Only 203.0.113.0/24 VIPs and a 198.51.100.0/24 host address, inside namespaces this run makes
and removes (also on errors). Prints JSON lines and writes takeover.json and takeover.md into
--out (default bench/results). Figures are indicative: a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance import machine, revision
from pyroute2 import AsyncIPRoute, NetlinkError

from iprotate.carp.machine import AddAddress, DelAddress, SendGarp
from iprotate.carp.node import Effect
from iprotate.cluster.loader import load_cluster
from iprotate.engine.addresses import AddressSetter
from iprotate.engine.daemon import Daemon, RunOptions, _collect
from iprotate.lab.netns import NetnsError, Segment
from iprotate.plan.model import VipPlan
from iprotate.plan.planner import make_plan

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
        # What `Daemon.run` sets up before it takes part.
        daemon._adv_index, _ = await daemon._link(ipr, daemon.host.interface)
        daemon._vip_index, _ = await daemon._link(ipr, daemon.host.vip_interface)
        daemon.addresses = AddressSetter(daemon._vip_index)
        await daemon._cleanup(ipr)
        daemon._join_groups()  # the CARP socket and the GarpSender
        for _ in range(rounds):
            # 1. address + gratuitous ARP, one VIP at a time, through Daemon._apply.
            for v in vips:
                t0 = time.perf_counter()
                daemon._apply(Effect(v, AddAddress()))
                t1 = time.perf_counter()
                daemon._apply(Effect(v, SendGarp()))
                t2 = time.perf_counter()
                out["add"].append(t1 - t0)
                out["garp"].append(t2 - t1)
                out["add_garp"].append(t2 - t0)
            found = _count_results(daemon.addresses, "delete")
            for v in vips:
                t0 = time.perf_counter()
                daemon._apply(Effect(v, DelAddress()))
                out["del"].append(time.perf_counter() - t0)
            out.setdefault("del_found", []).append(sum(found))
            del daemon.addresses.delete  # back to the class's method
            # The same deletes in reverse order: secondaries first, the primary last.
            for v in vips:
                daemon._apply(Effect(v, AddAddress()))
            for v in reversed(vips):
                t0 = time.perf_counter()
                daemon._apply(Effect(v, DelAddress()))
                out.setdefault("del_reverse", []).append(time.perf_counter() - t0)

            # 2. a whole takeover: every machine BACKUP, then all master-down timers expire.
            node = daemon.node
            now = loop.time()
            _emit(daemon, node.start(now))
            node.takeover_seconds.clear()
            t0 = time.perf_counter()
            batch = node.timers(now + 3600.0)
            t1 = time.perf_counter()
            daemon._apply = _timed(daemon._apply, out["by_action"])  # type: ignore[method-assign]
            try:
                _emit(daemon, batch)
            finally:
                del daemon._apply  # back to the class's method
            t2 = time.perf_counter()
            per_vip = list(node.takeover_seconds.values())
            held = await _count_held(ipr, daemon._vip_index, {str(v.ip) for v in vips})

            # 3. the clean stop's last step: farewell adverts and every address removed.
            t3 = time.perf_counter()
            stop_batch = node.stop(loop.time())
            _emit(daemon, stop_batch)
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
        out["pyroute2_add"], out["pyroute2_del"] = await _pyroute2_reference(
            ipr, daemon._vip_index, vips, rounds
        )
    finally:
        if daemon._timer is not None:
            daemon._timer.cancel()
        if daemon.socket is not None:
            loop.remove_reader(daemon.socket.fileno())
            daemon.socket.close()
        if daemon.garp is not None:
            daemon.garp.close()
        if daemon.addresses is not None:
            daemon.addresses.close()
        ipr.close()
    return out


def _count_results(obj: Any, method: str) -> list[bool]:
    """Record what each call of `obj.method` returns (an instance attribute shadows it)."""
    results: list[bool] = []
    original = getattr(obj, method)

    def recording(*args: Any) -> bool:
        results.append(bool(original(*args)))
        return results[-1]

    setattr(obj, method, recording)
    return results


def _emit(daemon: Daemon, batch: list[Effect]) -> None:
    """One batch through `Daemon._emit`, which carries the effects out in order, as every event
    does; the timer it arms is cancelled (nothing else runs during the measurement)."""
    daemon._emit(batch)
    if daemon._timer is not None:
        daemon._timer.cancel()
        daemon._timer = None


Apply = Callable[[Effect], None]


def _timed(apply: Apply, into: dict[str, list[float]]) -> Apply:
    """`Daemon._apply` with the time of each call recorded by action type."""

    def timed(e: Effect) -> None:
        t0 = time.perf_counter()
        try:
            apply(e)
        finally:
            into.setdefault(type(e.action).__name__, []).append(time.perf_counter() - t0)

    return timed


async def _pyroute2_reference(
    ipr: AsyncIPRoute, index: int, vips: list[VipPlan], rounds: int
) -> tuple[list[float], list[float]]:
    """Reference only, not the daemon's path any more: one address add and delete through
    pyroute2's `AsyncIPRoute.addr`, awaited one at a time (what the daemon used before
    iprotate.engine.addresses)."""
    add: list[float] = []
    delete: list[float] = []
    for _ in range(rounds):
        for op, into in (("add", add), ("del", delete)):
            for v in vips:
                t0 = time.perf_counter()
                with contextlib.suppress(NetlinkError):  # as the daemon did: EEXIST, EADDRNOTAVAIL
                    await ipr.addr(
                        op, index=index, address=str(v.ip), prefixlen=v.address.network.prefixlen
                    )
                into.append(time.perf_counter() - t0)
    return add, delete


async def _count_held(ipr: AsyncIPRoute, index: int, wanted: set[str]) -> int:
    msgs = await _collect(ipr.addr("dump", index=index, family=2))
    return sum(1 for m in msgs if m.get_attr("IFA_ADDRESS") in wanted)


# --- the driver -----------------------------------------------------------------------------------


def run(vips: int, rounds: int, promote: bool = True) -> list[dict[str, Any]]:
    """Build the segment, run the worker in it, summarise; everything removed on return."""
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
            if promote:
                # Without it, deleting the first VIP of a subnet (the primary address) deletes
                # every other VIP of that subnet with it: each delete would not be one VIP's.
                key = f"net.ipv4.conf.{INTERFACE}.promote_secondaries=1"
                seg.run(HOST, "sysctl", "-q", "-w", key)
            argv = [sys.executable, os.path.abspath(__file__), "--worker", str(cluster)]
            argv += ["--rounds", str(rounds), "--log", str(work / "worker.log")]
            raw = json.loads(seg.run(HOST, *argv))
            left = seg.addresses(HOST)
        base = {
            "bench": "takeover",
            "vips": vips,
            "rounds": rounds,
            "machine": machine(),
            "revision": revision(),
            "promote_secondaries": promote,
        }
        results.append({**base, "what": "add_garp", **summary(raw["add_garp"]), "target_ms": 2.0})
        results.append({**base, "what": "add", **summary(raw["add"])})
        results.append({**base, "what": "garp", **summary(raw["garp"])})
        results.append(
            {**base, "what": "del", **summary(raw["del"]), "found_per_round": raw["del_found"]}
        )
        results.append({**base, "what": "del_reverse", **summary(raw["del_reverse"])})
        for action, samples in sorted(raw["by_action"].items()):
            results.append(
                {
                    **base,
                    "what": f"in_batch_{action}",
                    "detail": f"{action} effects of the takeover batch, through Daemon._apply",
                    **summary(samples),
                }
            )
        for what in ("pyroute2_add", "pyroute2_del"):
            results.append(
                {
                    **base,
                    "what": what,
                    "detail": "reference, not the daemon's path: AsyncIPRoute.addr, awaited",
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
                "detail": f"all {vips} VIPs at once: compute, then until the last advert is out",
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


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a markdown page."""
    r0 = results[0]
    by = {r["what"]: r for r in results}
    labels = {
        "add_garp": "**address + gratuitous ARP** (`AddAddress`, `SendGarp`), one VIP at a time",
        "add": "address add alone (`AddAddress`: `AddressSetter.add`)",
        "garp": "gratuitous ARP alone (`GarpSender.send`)",
        "del": "address delete (`DelAddress`), in plan order: each is the subnet's primary",
        "del_reverse": "address delete (`DelAddress`), in reverse order: secondaries first",
        "in_batch_Transition": "in a takeover batch: `Transition` (the log line)",
        "in_batch_AddAddress": "in a takeover batch: `AddAddress`",
        "in_batch_SendGarp": "in a takeover batch: `SendGarp`",
        "in_batch_SendAdvert": "in a takeover batch: `SendAdvert` (encode + send)",
        "takeover_per_vip": "in a takeover batch: Transition -> first advert (`takeover_seconds`)",
        "pyroute2_add": "reference, not the daemon's path: `AsyncIPRoute.addr('add')`",
        "pyroute2_del": "reference, not the daemon's path: `AsyncIPRoute.addr('del')`",
    }
    lines = [
        "# Takeover work per VIP",
        "",
        f"Command: `python bench/takeover.py --vips {r0['vips']} --rounds {r0['rounds']}`. "
        "One namespace (one member, `eth1`); the worker builds the real `Daemon` and drives its "
        "own `_apply`/`_emit` with its `AddressSetter`, `GarpSender` and `CarpSocket`. "
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
        f"| takeover: `Daemon._emit` carries them out, until the last VIP's advert "
        f"| {batch['execute_ms']['n']} | {batch['execute_ms']['p50_ms']} "
        f"| {batch['execute_ms']['max_ms']} |",
        f"| clean stop: farewell advert + address removal, every VIP | {stop['n']} "
        f"| {stop['p50_ms']} | {stop['max_ms']} |",
        "",
        f"`net.ipv4.conf.eth1.promote_secondaries` = {int(r0['promote_secondaries'])}; deletes "
        f"that found their VIP, per round: {by['del']['found_per_round']} of {r0['vips']}. "
        f"VIPs held after each takeover round: {batch['held_after_takeover']}; effect errors: "
        f"{batch['errors']}; VIPs left after the last stop: {stop['addresses_left']}.",
        "",
        "The daemon carries a batch's effects out one after the other, so when every VIP's "
        "timer fires at once (a dead owner's adverts all arrived in one burst) the last VIP is "
        "served the whole batch time after the first: the batch time is what a survivor adds "
        "to D for its last VIP. The pyroute2 rows show what the address add cost before "
        "iprotate.engine.addresses.",
        "",
        "Deletes: the VIPs share a /24, so the first one added is the subnet's primary address. "
        "Deleting VIPs in plan order (as the clean stop does) deletes the primary every time and "
        "the kernel promotes the next secondary, which costs it about 0.3 ms per VIP here; in "
        "reverse order each delete is a plain secondary's. Without promote_secondaries (the "
        "kernel default) deleting the primary silently deletes every other VIP of the subnet "
        "(`--no-promote-secondaries` shows 1 delete of 254 finding its address).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vips", type=int, default=254, help="1..254 (203.0.113.1 upwards)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--promote-secondaries",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set net.ipv4.conf.eth1.promote_secondaries=1 in the namespace (see the docstring)",
    )
    ap.add_argument(
        "--out", default=str(RESULTS), help="where takeover.json and takeover.md go ('' for none)"
    )
    ap.add_argument("--worker", metavar="CLUSTER", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker, args.rounds, args.log or os.devnull))))
        return
    if os.geteuid() != 0:
        sys.exit("bench/takeover.py needs root (network namespaces)")
    try:
        results = run(args.vips, args.rounds, args.promote_secondaries)
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
