"""Planner benchmark: N hosts, M VIPs, time and peak memory of one plan (target: N=100, M=10,000
in under 1 s and 200 MB, on one core).

    .venv/bin/python bench/planner.py [--hosts 100] [--vips 10000]

Prints one JSON line. The VIPs are 40 pools of 250 in 198.18.0.0/15 (the benchmarking range),
each pool in a multicast group of its own (a group carries at most 255 vhids).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from iprotate.cluster.loader import parse_cluster
from iprotate.plan.planner import make_plan


def cluster_doc(hosts: int, vips: int) -> dict:
    pools = []
    left = vips
    g = 0
    while left > 0:
        n = min(250, left)
        a, b = divmod(g, 256)
        pools.append(
            {
                "pool": f"198.{18 + a}.{b}.1-198.{18 + a}.{b}.{n}/24",
                "group": f"239.255.{a}.{b}",
            }
        )
        left -= n
        g += 1
    return {
        "cluster": {"interface": "eth1", "password": "bench"},
        "hosts": [{"name": f"h{i:03d}", "address": f"198.51.100.{i + 1}"} for i in range(hosts)],
        "vips": pools,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vips", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    doc = cluster_doc(args.hosts, args.vips)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cluster = parse_cluster(doc, "bench.toml")
        plan = make_plan(cluster)
        times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "hosts": args.hosts,
                "vips": len(plan.vips),
                "seconds_best": round(min(times), 3),
                "seconds_worst": round(max(times), 3),
                "peak_rss_mb": round(rss_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
