"""Flood benchmark (issue 9): what rate of junk CARP packets a cluster survives with no transition.

    sudo .venv/bin/python bench/flood.py [--rates 10000,30000,100000,230000,max] [--duration 10]
                                         [--kinds stranger,spoofed,garbage]

A lab (iprotate.lab.lab.Lab) of 3 iprotate hosts and 9 VIPs, advbase 1 (D = 3 s and a bit), every
VIP settled on its owner. A sender in the client namespace (this script, `--send`: a raw socket
with IP_HDRINCL, packets built beforehand, sendmmsg(2) in batches of up to 64, paced to a target
rate) floods the CARP group 224.0.0.18 on the lab's bridge for `--duration` seconds, so every host
receives every packet. Kinds:

- stranger: valid adverts (digest right, advskew 0) from 198.51.100.99, no host of the cluster:
  the kernel filter (engine.source_filter) drops all but 1 in 64 before Python sees them;
- spoofed:  adverts under a host's address (each VIP's owner), digest right (the attacker
  knows the password, or rewrote captures), advskew 0, but a counter whose tag is wrong: the
  filter passes them and the node drops them in Python (`drop_forged`), after the decode, the
  digest and the tag, each packet costing the daemon CPU time;
- garbage:  protocol 112 packets of 36 random bytes under a host's address: the filter passes
  them, the decoder drops them (`drop_bad_version`, `drop_bad_type` and the like).

Each run, rate after rate: the hosts' transitions (the status document's per-VIP count, read
through the control socket before and after), who holds each VIP (Lab.holders, the addresses each
host really has, sampled as fast as three `ip addr` calls allow) and what the client's ARP probe
sees every 100 ms, each daemon's CPU (utime+stime from /proc/PID/stat) over the flood, the
kernel's drops on the daemon's CARP socket (/proc/net/raw: packets lost because its receive
buffer was full, which is how real adverts get lost), the node's drop counters, the rate the
sender achieved and the rate a host's interface received. Between runs the cluster must settle
again (each VIP on its owner alone).

Writes bench/results/flood.md and flood.json (--out to change) with the command and the revision;
`--repeat N` runs each kind and rate N times; `--daemons DIR --label REV` runs the hosts' daemons
from another copy of the source (`git archive REV iprotate | tar -x -C DIR`), to compare revisions
in the same conditions; `--replot FILE... [--before FILE]` writes the page from the JSON of several
invocations (bench/results/flood.json holds the runs at this revision, flood-before.json those
before the receive-path fixes).
The sender only ever sends on the client's interface, to 224.0.0.18, inside the lab; it stops
itself after --duration and is stopped by PID when the benchmark ends, even on failure.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from provenance import machine, revision

from iprotate.carp import codec
from iprotate.engine.control import ControlError, request
from iprotate.lab.lab import CLIENT, Lab
from iprotate.lab.netns import Segment
from iprotate.plan.model import Plan

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
HOSTS = 3
VIPS = 9
STRANGER = IPv4Address("198.51.100.99")  # no host of the lab's cluster file
GROUP = IPv4Address("224.0.0.18")
KINDS = ("stranger", "spoofed", "garbage")
DEFAULT_RATES = "10000,30000,100000,230000,max"
DISTINCT = 256  # packets built per kind, sent round-robin
BATCH = 64  # packets per sendmmsg(2)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE = 0.05  # seconds between two samples of the holders, at best
SETTLE_TIMEOUT = 30.0
AFTER = 4.0  # seconds watched after the flood: a takeover needs D (3.2 s) without adverts


# --- the packets (pure) ------------------------------------------------------------------------


def flood_packets(kind: str, plan: Plan, count: int = DISTINCT, seed: int = 9) -> list[bytes]:
    """`count` whole IPv4 packets (headers included, for IP_HDRINCL) of one flood kind, spread
    over every VIP of `plan`, all to the group 224.0.0.18."""
    rng = random.Random(seed)
    password = plan.cluster.password
    vips = [v for v in plan.vips if v.group == GROUP]
    if not vips:
        raise ValueError(f"no VIP of the plan uses {GROUP}")
    hosts = {h.name: h.address for h in plan.cluster.hosts}
    out = []
    for i in range(count):
        v = vips[i % len(vips)]
        ident = rng.getrandbits(16)
        if kind == "garbage":
            carp = rng.randbytes(codec.CARP_LEN)
            out.append(codec.build_ip_packet(hosts[v.owner], GROUP, carp, ident=ident))
            continue
        # A seq far ahead of the wall clock and a random tag: what a rewritten capture carries.
        counter = (0xF0000000 + i) << 32 | rng.getrandbits(32)
        carp = codec.encode_advert(
            vhid=v.vhid, advbase=plan.cluster.advbase, advskew=0, counter=counter, vip=v.ip,
            password=password,
        )  # fmt: skip
        if kind == "stranger":
            src = STRANGER
        elif kind == "spoofed":
            src = hosts[v.owner]
        else:
            raise ValueError(f"unknown flood kind {kind!r}; known: {', '.join(KINDS)}")
        out.append(codec.build_ip_packet(src, GROUP, carp, ident=ident))
    return out


def parse_rates(text: str) -> list[int]:
    """'10000,30k,max' -> [10000, 30000, 0]; 0 means as fast as the sender can."""
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        if not p:
            continue
        if p == "max":
            out.append(0)
        elif p.endswith("k"):
            out.append(int(float(p[:-1]) * 1000))
        else:
            out.append(int(p))
        if out[-1] < 0:
            raise ValueError(f"negative rate {part!r}")
    return out


def due(elapsed: float, rate: int, sent: int, batch: int = BATCH) -> int:
    """How many packets the sender should send now to hold `rate` (0: as many as a batch)."""
    if rate <= 0:
        return batch
    return max(0, min(batch, int(elapsed * rate) + 1 - sent))


# --- the sender (run inside the client namespace) ----------------------------------------------


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def send_flood(interface: str, packets: Sequence[bytes], rate: int, duration: float) -> dict:
    """Send `packets` round-robin to 224.0.0.18 on `interface` at `rate` packets/s (0: as fast as
    possible) for `duration` seconds; what was achieved."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    mreqn = struct.pack("=4s4si", GROUP.packed, b"\0" * 4, socket.if_nametoindex(interface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    n = len(packets)
    # sockaddr_in for the group: family, port 0, address.
    addr = ctypes.create_string_buffer(
        struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", GROUP.packed)
    )
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in packets]
    iovs = (_Iovec * n)(
        *[_Iovec(ctypes.addressof(b), len(p)) for b, p in zip(bufs, packets, strict=True)]
    )
    msgs = (_Mmsghdr * n)()
    for i in range(n):
        h = msgs[i].hdr
        h.name, h.namelen = ctypes.addressof(addr), 16
        h.iov, h.iovlen = ctypes.pointer(iovs[i]), 1
    size = ctypes.sizeof(_Mmsghdr)
    base = ctypes.addressof(msgs)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fd = s.fileno()
    sent = errors = at = 0
    t0 = time.monotonic()
    end = t0 + duration
    while (now := time.monotonic()) < end:
        k = min(due(now - t0, rate, sent), n - at)
        if k <= 0:
            time.sleep(min(1.0 / rate, end - now))
            continue
        r = sendmmsg(fd, base + at * size, k, 0)
        if r < 0:
            e = ctypes.get_errno()
            if e not in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                raise OSError(e, os.strerror(e))
            errors += 1
            continue
        sent += r
        at = (at + r) % n
    elapsed = time.monotonic() - t0
    s.close()
    return {
        "sent": sent,
        "seconds": round(elapsed, 3),
        "rate": round(sent / elapsed),
        "errors": errors,
    }


# --- the lab side ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raw_drops(text: str, proto: int = codec.CARP_PROTO) -> int:
    """The kernel's drops, summed over the raw sockets of protocol `proto`, from /proc/net/raw
    (packets lost because a socket's receive buffer was full; the filter's drops are not in it)."""
    total = 0
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 13 and f[1].rsplit(":", 1)[-1].upper() == f"{proto:04X}":
            total += int(f[-1])
    return total


def rx_packets(lab: Lab, host: str) -> tuple[int, int]:
    """(packets, dropped) received so far on the host's segment interface."""
    out = json.loads(lab.seg.run(host, "ip", "-s", "-j", "link", "show", "eth1"))
    rx = out[0]["stats64"]["rx"]
    return int(rx["packets"]), int(rx["dropped"])


def status(lab: Lab, host: str) -> dict[str, Any]:
    return request(str(lab.control_socket(host)), {"cmd": "status"}, timeout=30.0)


@dataclass
class Snapshot:
    """What one host had counted at one instant."""

    transitions: int
    counters: dict[str, int]
    kernel_drops: int
    cpu: float
    rx: int
    rx_dropped: int


def snapshot(lab: Lab, host: str) -> Snapshot:
    doc = status(lab, host)
    doc = doc.get("status", doc)
    trans = sum(v["transitions"] or 0 for v in doc["vips"])
    drops = raw_drops(lab.seg.run(host, "cat", "/proc/net/raw"))
    rx, rx_dropped = rx_packets(lab, host)
    return Snapshot(trans, dict(doc["counters"]), drops, cpu_seconds(lab.procs[host][0].pid), rx,
                    rx_dropped)  # fmt: skip


def owners(lab: Lab) -> dict[str, list[str]]:
    return {str(v.ip): [v.owner] for v in lab.plan.vips}


def wait_settled(lab: Lab, timeout: float = SETTLE_TIMEOUT, hold: float = 2.0) -> bool:
    """Every VIP on its owner alone for `hold` seconds."""
    t0 = time.monotonic()
    since = None
    want = owners(lab)
    while time.monotonic() - t0 < timeout:
        if lab.holders() == want:
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.2)
    return False


def one_run(
    lab: Lab, kind: str, rate: int, duration: float, packet_file: Path, workdir: Path
) -> dict[str, Any]:
    """One flood of `kind` at `rate` (0: max) and what the cluster did."""
    settled = wait_settled(lab)
    before = {h: snapshot(lab, h) for h in lab.names}
    lab.poll_probe()
    out_file = workdir / f"send-{kind}-{rate}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--send", "--interface", "eth0",
            "--packets", str(packet_file), "--rate", str(rate), "--duration", str(duration),
            "--result", str(out_file)]  # fmt: skip
    want = owners(lab)
    samples = bad_samples = 0
    two: set[str] = set()
    none: set[str] = set()
    moved: set[str] = set()
    gaps: list[float] = []
    sender = lab.seg.spawn(CLIENT, argv, log=str(workdir / "sender.log"))
    t0 = time.monotonic()
    cpu0 = cpu_seconds(sender.pid)
    sender_cpu = 0.0
    last = t0
    try:
        while True:
            running = sender.poll() is None
            if running:
                sender_cpu = cpu_seconds(sender.pid) - cpu0
            if not running and time.monotonic() - t0 > duration + AFTER:
                break
            if time.monotonic() - t0 > duration + AFTER + 30:
                raise RuntimeError(f"the sender outlived its {duration} s")
            h = lab.holders()
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            samples += 1
            if h != want:
                bad_samples += 1
            for ip, hs in h.items():
                if len(hs) > 1:
                    two.add(ip)
                elif not hs:
                    none.add(ip)
                elif hs != want[ip]:
                    moved.add(ip)
            time.sleep(max(0.0, SAMPLE - (time.monotonic() - now)))
    finally:
        Segment.stop(sender, signal.SIGTERM, timeout=5.0)
    arp = lab.poll_probe()
    arp_two = sorted({ip for _, view in arp for ip, hs in view.items() if len(hs) > 1})
    arp_none = sorted({ip for _, view in arp for ip, hs in view.items() if not hs})
    after = {h: snapshot(lab, h) for h in lab.names}
    sent = json.loads(out_file.read_text()) if out_file.exists() else {}
    hosts = {}
    for h in lab.names:
        b, a = before[h], after[h]
        hosts[h] = {
            "transitions": a.transitions - b.transitions,
            "cpu_pct": round((a.cpu - b.cpu) / max(sent.get("seconds", duration), 0.1) * 100, 1),
            "cpu_s": round(a.cpu - b.cpu, 2),
            "kernel_drops": a.kernel_drops - b.kernel_drops,
            "rx": a.rx - b.rx,
            "rx_dropped": a.rx_dropped - b.rx_dropped,
            "counters": {
                k: a.counters.get(k, 0) - b.counters.get(k, 0)
                for k in sorted(set(a.counters) | set(b.counters))
                if a.counters.get(k, 0) != b.counters.get(k, 0)
            },
        }
    secs = sent.get("seconds") or duration
    return {
        "kind": kind,
        "target": rate,
        "settled_before": settled,
        "sender": {**sent, "cpu_pct": round(sender_cpu / secs * 100, 1)},
        # What reached a host's interface, per second of flood (adverts included: 9/s).
        "received_rate": round(max(hosts[h]["rx"] for h in lab.names) / secs),
        "transitions": sum(x["transitions"] for x in hosts.values()),
        "two_hosts": sorted(two),
        "no_host": sorted(none),
        "moved": sorted(moved),
        "samples": samples,
        "bad_samples": bad_samples,
        "max_gap_s": round(max(gaps, default=0.0), 3),
        "arp_rounds": len(arp),
        "arp_two": arp_two,
        "arp_none": arp_none,
        "hosts": hosts,
    }


def run(
    kinds: list[str],
    rates: list[int],
    duration: float,
    workdir: Path,
    repeat: int = 1,
    about: dict[str, Any] | None = None,
) -> list[dict]:
    """Every flood of every kind at every rate, `repeat` times, in one lab; each result carries
    `about` (the command, the revision the daemons run) and the load average at its end."""
    results: list[dict] = []
    with Lab(workdir, hosts=HOSTS, vips=VIPS, advbase=1) as lab:
        lab.start_all()
        lab.start_probe(period=0.1)
        if not wait_settled(lab, timeout=60.0):
            raise RuntimeError(f"the lab did not settle: {lab.holders()}")
        for kind in kinds:
            packet_file = workdir / f"{kind}.hex"
            packet_file.write_text("\n".join(p.hex() for p in flood_packets(kind, lab.plan)) + "\n")
            for rate in [r for r in rates for _ in range(repeat)]:
                print(f"flood: {kind} at {rate or 'max'} packets/s ...", flush=True)
                try:
                    r = one_run(lab, kind, rate, duration, packet_file, workdir)
                except (RuntimeError, ControlError, OSError) as e:
                    r = {"kind": kind, "target": rate, "error": str(e)}
                r.update(about or {})
                r["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
                r["load"] = round(os.getloadavg()[0], 2)
                print("  " + summary_line(r), flush=True)
                results.append(r)
    return results


# --- the page ----------------------------------------------------------------------------------


def summary_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['kind']} {r['target'] or 'max'}: error {r['error']}"
    return (
        f"{r['kind']} target {r['target'] or 'max'}: sent {r['sender'].get('rate')}/s, received "
        f"{r['received_rate']}/s, transitions {r['transitions']}, two hosts {r['two_hosts']}, "
        f"none {r['no_host']}, cpu {[x['cpu_pct'] for x in r['hosts'].values()]}, kernel drops "
        f"{[x['kernel_drops'] for x in r['hosts'].values()]}"
    )


def judged(host: dict[str, Any]) -> int:
    """Packets one daemon read and judged in Python (dropped with a reason, or accepted)."""
    c = host["counters"]
    return sum(n for k, n in c.items() if k.startswith("drop_")) + c.get("adverts_received", 0)


def us_per_packet(r: dict[str, Any]) -> float | None:
    """Daemon CPU per packet judged in Python, microseconds, mean over the hosts (the daemons'
    idle work, their own adverts and timers, included: it only counts when the flood is large)."""
    got = [x["cpu_s"] / judged(x) * 1e6 for x in r["hosts"].values() if "cpu_s" in x and judged(x)]
    return round(sum(got) / len(got), 1) if got else None


def _counter_text(hosts: dict[str, Any]) -> str:
    """The node's counters that moved, summed over the hosts: drops, adverts received and sent."""
    total: dict[str, int] = {}
    for x in hosts.values():
        for k, n in x["counters"].items():
            if k.startswith("drop_") or k in ("adverts_received", "adverts_sent"):
                total[k] = total.get(k, 0) + n
    return ", ".join(f"{k} {n}" for k, n in sorted(total.items())) or "-"


def table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| kind | target/s | sent/s | received/s | transitions | VIPs on 2 hosts / none (ARP) | "
        "daemon CPU % (per host) | µs/packet | kernel drops (per host) | node counters (3 hosts) "
        "| load |",
        "|---|---:|---:|---:|---:|---|---|---:|---|---|---:|",
    ]

    def order(r: dict[str, Any]) -> tuple[int, float]:
        kind = KINDS.index(r["kind"]) if r["kind"] in KINDS else len(KINDS)
        return kind, r["target"] or float("inf")

    for r in sorted(results, key=order):
        target = f"{r['target']:,}" if r["target"] else "max"
        if "error" in r:
            rows.append(f"| {r['kind']} | {target} | error: {r['error']} |||||||||")
            continue
        hs = r["hosts"].values()
        rows.append(
            f"| {r['kind']} | {target} | {r['sender'].get('rate', 0):,} | {r['received_rate']:,} "
            f"| {r['transitions']} | {len(r['two_hosts'])} / {len(r['no_host'])} "
            f"({len(r.get('arp_two', []))} / {len(r.get('arp_none', []))}) "
            f"| {' / '.join(str(x['cpu_pct']) for x in hs)} | {us_per_packet(r) or '-'} "
            f"| {' / '.join(str(x['kernel_drops']) for x in hs)} | {_counter_text(r['hosts'])} "
            f"| {r.get('load', '-')} |"
        )
    return rows


def survived(results: list[dict[str, Any]]) -> dict[str, int | None]:
    """Per kind, the highest achieved rate with no transition and no VIP on two hosts or none,
    below the lowest rate that had any (None if even the lowest failed)."""
    out: dict[str, int | None] = {}
    for kind in dict.fromkeys(r["kind"] for r in results):
        runs = sorted(
            (r for r in results if r["kind"] == kind and "error" not in r),
            key=lambda r: r["sender"].get("rate", 0),
        )
        best = None
        for r in runs:
            if failed(r):
                break
            best = r["sender"].get("rate", 0)
        out[kind] = best
    return out


def _about(results: list[dict[str, Any]]) -> list[str]:
    """The commands, revisions and dates of a set of runs."""
    commands = list(dict.fromkeys(r.get("command", "?") for r in results))
    revs = ", ".join(dict.fromkeys(r.get("revision", "?") for r in results))
    dates = sorted(r["date"] for r in results if "date" in r)
    when = f"{dates[0]} to {dates[-1]}" if dates else "?"
    return [
        *(f"    {c}" for c in commands),
        "",
        f"Daemons at revision {revs}; runs from {when}; {machine()}. The machine is shared with "
        "other jobs (its 1-minute load average at the end of each run: *load*): indicative "
        "figures.",
    ]


def failed(r: dict[str, Any]) -> bool:
    return bool(r["transitions"] or r["two_hosts"] or r["no_host"])


def tally(results: list[dict[str, Any]]) -> list[str]:
    """Per kind, the runs that failed (a transition, a VIP on two hosts or none) out of the runs,
    by achieved rate to the nearest 10,000 packets/s."""
    lines = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        buckets: dict[int, list[int]] = {}
        for r in results:
            if r["kind"] == kind and "error" not in r:
                b = buckets.setdefault(round(r["sender"].get("rate", 0), -4), [0, 0])
                b[0] += 1
                b[1] += failed(r)
        text = ", ".join(f"{k:,}/s {bad} of {n}" for k, (n, bad) in sorted(buckets.items()))
        lines.append(f"- {kind}: {text}")
    return lines


def markdown(
    results: list[dict[str, Any]],
    duration: float,
    before: list[dict[str, Any]] | None = None,
) -> str:
    ok = survived(results)
    head = "; ".join(f"{k}: {'none' if v is None else f'{v:,}/s'}" for k, v in ok.items())
    return "\n".join(
        [
            "# Flood benchmark: junk CARP packets at a cluster (issue 9)",
            "",
            *_about(results),
            "",
            f"3 iprotate hosts, 9 VIPs (3 each), advbase 1 (D = 3 s + skew), every VIP on its "
            f"owner; a sender in the client namespace floods 224.0.0.18 on the lab's bridge for "
            f"{duration:g} s per run (sendmmsg, batches of {BATCH}); every host receives every "
            "packet. Kinds: *stranger*, adverts with a valid digest from 198.51.100.99 (no host: "
            "the kernel filter passes 1 in 64); *spoofed*, adverts under each VIP's owner's "
            "address with a valid digest and advskew 0 but a wrong tag (the filter passes them, "
            "the node drops them as `drop_forged` after decode, digest and tag); *garbage*, 36 "
            "random bytes of protocol 112 under a host's address (dropped by the decoder).",
            "",
            "Columns: *sent/s*, what the sender handed to the kernel; *received/s*, packets the "
            "busiest host's eth1 received per second of flood (the lab's own adverts, about 9/s, "
            "included); *transitions*, CARP state changes over the 3 hosts during the flood and "
            f"{AFTER:g} s after (status document); *VIPs on 2 hosts / none*, from the addresses "
            "the hosts really had (`Lab.holders`, sampled every 50 ms at best, about every 60 ms "
            "in practice), and in brackets what the client's ARP probe saw (every 100 ms: VIPs "
            "answered by two MACs / by none); *daemon CPU*, "
            "utime+stime of each `iprotate run` over the flood, % of one core; *kernel drops*, "
            "packets the kernel dropped on the daemon's CARP socket because its receive buffer "
            "was full (/proc/net/raw; this is how real adverts get lost); *node counters*, the "
            "drops, accepted adverts and adverts sent the daemons counted, summed (with no "
            "transition the masters' 9 VIPs send 9 adverts a second, so about 130 in a 10 s run "
            "and the 4 s after: fewer means a master's timers ran late).",
            "",
            *table(results),
            "",
            f"Highest rate survived with no transition and every VIP on exactly one host: {head}.",
            "Runs with a transition or a VIP on two hosts or none, of all runs, by the rate sent "
            "(to the nearest 10,000):",
            "",
            *tally(results),
            "",
            *HOW_TO_READ,
            *(_before_section(before) if before else []),
        ]
    )


HOW_TO_READ = [
    "## How to read it",
    "",
    "- Everything runs on one 2-core machine: the sender, the kernel's work for the bridge (each "
    "packet copied to four namespaces) and the three daemons share the two cores, so the sender "
    "tops out near 110,000 packets/s for packets the filter drops and near 60,000 for packets "
    "that reach three daemons; the 230,000 packets/s of the issue cannot be made here, and "
    "*sent/s* is what each run really achieved. The daemons never get a whole core each.",
    "- *stranger*: the kernel filter drops 63 in 64 before any socket queue; the daemons spend a "
    "few percent of a core at the highest rate the sender reaches, their socket drops nothing, "
    "and no advert is lost (*µs/packet* means nothing here: few packets are judged, and the "
    "daemon's own timers dominate).",
    "- *spoofed* under a host's address: the filter must pass it (the address is a host's), and "
    "each packet costs the daemon a decode, the CARP digest (HMAC-SHA1) and iprotate's tag "
    "(HMAC-SHA256) in Python, about 20 µs of the daemon's CPU with the kernel's receive work "
    "(*µs/packet*, at the high rates): one whole core would judge about 50,000 a second. Past "
    "what the daemon gets, the socket's queue stays full and the kernel drops packets at random, "
    "real adverts among them (*kernel drops*; *adverts_received* falls). A backup takes a VIP "
    "over only after dead_ratio (3) adverts in a row are lost, so a flood that costs a few "
    "percent of the adverts does nothing, and one that costs a quarter or more makes "
    "transitions, and VIPs on two hosts, likely within seconds.",
    "- A spoofed packet under the receiving host's own address stops in the kernel (our adverts "
    "are never looped back, so such a packet is always a spoof): each host judges the two thirds "
    "of this flood that claim another host.",
    "- *garbage* fails the decoder: about 7-8 µs a packet, cheaper than a spoofed advert, "
    "dearer than a stranger.",
    "- The receive buffer alone, interleaved A/B on the same machine minutes apart "
    "([flood-buffer-ab.json](flood-buffer-ab.json), runs labelled `nobuf`: the kernel's default "
    "buffer, else 1 MiB), 4 runs each at 30,000 and 40,000 spoofed packets/s: transitions in 1 of "
    "8 runs with 1 MiB, 4 of 8 with the default; kernel drops at 30,000/s 0-28,000 against "
    "4,000-93,000 (all hosts, 10 s). A hint, within a noisy machine, not a proof.",
    "- Before and after the fixes, interleaved too (the runs marked dd9f1a9 below and those at "
    "this revision above, minutes apart): the same picture, 20,000/s survived every time, 30,000/s "
    "nearly always, 40,000/s and more mostly not. The fixes do not make Python judge a spoofed "
    "advert any faster; what would is judging fewer in Python at all.",
    "- No check was weakened: every packet that reaches Python is judged as before. What the "
    "fixes change: the daemon keeps its own advert timers on time while a flood waits in its "
    "socket (in the first run before them, at 30,000/s, the masters sent 114 of the 126 adverts "
    "due; a larger buffer without that fix left them mute and put every VIP on two hosts), its "
    "socket rides out short moments it is not scheduled, and floods under its own address cost "
    "it nothing.",
    "",
]


def _before_section(before: list[dict[str, Any]]) -> list[str]:
    revs = list(dict.fromkeys(r.get("revision", "?") for r in before))
    ok = survived(before)
    head = "; ".join(f"{k}: {'none' if v is None else f'{v:,}/s'}" for k, v in ok.items())
    return [
        f"## Before the receive-path fixes (revision {', '.join(revs)})",
        "",
        "The same benchmark on the daemon as it was (the socket read until empty on every wake-up, "
        "the kernel's default receive buffer, our own address passed by the filter). Its "
        "*µs/packet* for *spoofed* is overstated: the third of those packets under the host's own "
        "address was decoded too, but counted nowhere.",
        "",
        *_about(before),
        "",
        *table(before),
        "",
        f"Highest rate survived then: {head}. Runs that failed, of all runs, by the rate sent:",
        "",
        *tally(before),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--rates", default=DEFAULT_RATES, help="packets/s, comma-separated; max")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per flood")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeat", type=int, default=1, help="runs per kind and rate")
    ap.add_argument(
        "--before", type=Path, help="flood.json of an earlier revision, shown below for comparison"
    )
    ap.add_argument(
        "--daemons",
        type=Path,
        help="run the hosts' daemons from this copy of the source (a directory holding iprotate/, "
        "e.g. `git archive REV iprotate | tar -x -C DIR`), to measure another revision",
    )
    ap.add_argument("--label", help="the revision the results are marked with (with --daemons)")
    ap.add_argument(
        "--replot",
        nargs="+",
        type=Path,
        help="only write flood.md from these flood.json files (runs of several invocations)",
    )
    ap.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--interface", help=argparse.SUPPRESS)
    ap.add_argument("--packets", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.send:
        pkts = [bytes.fromhex(x) for x in args.packets.read_text().split()]
        r = send_flood(args.interface, pkts, args.rate, min(args.duration, 120.0))
        args.result.write_text(json.dumps(r) + "\n")
        return 0
    before = None
    if args.before:
        before = [json.loads(line) for line in args.before.read_text().splitlines() if line]
    if args.replot:
        rows = [json.loads(x) for f in args.replot for x in f.read_text().splitlines() if x]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "flood.md").write_text(markdown(rows, args.duration, before))
        print(f"flood: wrote {args.out}/flood.md")
        return 0
    if os.geteuid() != 0:
        print("flood: needs root (network namespaces)", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    rates = parse_rates(args.rates)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, interrupt)
    about = {
        "command": " ".join(["sudo .venv/bin/python bench/flood.py", *argv]),
        "revision": args.label or revision(),
    }
    if args.daemons:
        # The daemons (and the sender) are started with this interpreter and this environment.
        os.environ["PYTHONPATH"] = str(args.daemons.resolve())
        about["revision"] = args.label or f"the source in {args.daemons}"
    with tempfile.TemporaryDirectory(prefix="iprotate-flood-") as tmp:
        results = run(kinds, rates, args.duration, Path(tmp), args.repeat, about)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flood.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    (args.out / "flood.md").write_text(markdown(results, args.duration, before))
    print(f"flood: wrote {args.out}/flood.md, flood.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
