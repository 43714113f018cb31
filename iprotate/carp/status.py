"""What `iprotate status` shows: per VIP, this host's state, the master heard on the wire, the
planned owner; peers that drift from the plan; and what is wrong. Pure: built from a `Node`."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from iprotate.carp.node import Node

# A drift older than this is history (the peer was fixed or left), not a current problem.
DRIFT_RECENT = 30.0


def build_status(node: Node, now: float) -> dict[str, Any]:
    """The status document (JSON-ready) of `node` at `now`."""
    names = {h.address: h.name for h in node.plan.cluster.hosts}
    masters = node.masters(now)
    vips = []
    problems: list[str] = []
    for key, v in node.vips.items():
        m = node.machines.get(key)
        heard = [names.get(a, str(a)) for a in masters[key]]
        vips.append(
            {
                "address": str(v.address),
                "vhid": v.vhid,
                "group": str(v.group),
                "state": m.state.value if m else None,
                "since": round(now - m.since, 1) if m else None,
                "transitions": m.transitions if m else None,
                "drained": bool(m and m.drained),
                "master": heard,
                "planned": v.owner,
                "order": list(v.order),
            }
        )
        if not heard:
            problems.append(f"{v.address} vhid {v.vhid}: no master heard")
        elif len(heard) > 1:
            problems.append(f"{v.address} vhid {v.vhid}: two masters: {', '.join(heard)}")
    drift = []
    for (key, src), d in sorted(node.drift.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        v = node.vips[key]
        recent = now - d.last <= DRIFT_RECENT
        drift.append(
            {
                "vip": str(v.address),
                "vhid": v.vhid,
                "peer": names.get(src, str(src)),
                "address": str(src),
                "detail": d.detail,
                "count": d.count,
                "last_seen": round(now - d.last, 1),
                "recent": recent,
            }
        )
        if recent:
            problems.append(f"{v.address} vhid {v.vhid}: drift: {src} {d.detail}")
    return {
        "host": node.host,
        "vips": vips,
        "drift": drift,
        "counters": dict(sorted(node.counters.items())),
        "problems": problems,
    }


def status_text(doc: dict[str, Any]) -> str:
    """The status document as a table and a list of problems."""
    rows = [
        [
            v["address"],
            v["vhid"],
            (v["state"] or "-") + (" (drained)" if v["drained"] else ""),
            "-" if v["since"] is None else f"{v['since']:.0f}s",
            " ".join(v["master"]) or "NONE",
            v["planned"],
            "-" if v["transitions"] is None else v["transitions"],
        ]
        for v in doc["vips"]
    ]
    out = [
        f"host {doc['host']}",
        tabulate(
            rows, headers=["vip", "vhid", "state here", "since", "master", "owner", "transitions"]
        ),
    ]
    if doc["problems"]:
        out += ["", f"PROBLEMS ({len(doc['problems'])}):", *(f"  {p}" for p in doc["problems"])]
    else:
        out += ["", "OK: every VIP has exactly one master; no drift"]
    return "\n".join(out)
