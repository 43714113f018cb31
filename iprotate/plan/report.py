"""What `check` and `plan` print: tables and JSON computed from a plan. Pure: no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

from tabulate import tabulate

from iprotate.plan.model import Plan
from iprotate.plan.timing import master_down


def owners(plan: Plan) -> dict[str, int]:
    """VIPs owned per host (every host listed, in file order)."""
    return plan.load()


def ipv6_notes(plan: Plan) -> list[str]:
    """What the plan leaves out for IPv6, said plainly (none for an IPv4-only file)."""
    v6 = sum(1 for v in plan.vips if v.ip.version == 6)
    if not v6:
        return []
    out = []
    ucarp = [h.name for h in plan.cluster.hosts if h.engine == "ucarp"]
    if ucarp:
        out.append(
            f"{', '.join(ucarp)} (ucarp) take(s) no part in the {v6} IPv6 VIPs: ucarp speaks no "
            "IPv6; they are balanced over the other hosts"
        )
    return out


def summary_json(plan: Plan) -> dict[str, Any]:
    c = plan.cluster
    groups = Counter(str(v.group) for v in plan.vips)
    extra: dict[str, Any] = {}
    v6 = sum(1 for v in plan.vips if v.ip.version == 6)
    if v6:  # only then: an IPv4-only summary stays as it was
        extra = {"ipv6_vips": v6, "notes": ipv6_notes(plan)}
    runs = {h.name: {k.name for k in plan.checks_for(h.name)} for h in c.hosts} if c.checks else {}
    return {
        "file": c.path,
        "advbase": c.advbase,
        "dead_ratio": c.dead_ratio,
        "hosts": len(c.hosts),
        "vips": len(plan.vips),
        "groups": dict(sorted(groups.items())),
        "owners": owners(plan),
        "warnings": list(c.warnings),
        **extra,
        "checks": [
            {
                "name": k.name,
                k.kind: list(k.argv) if k.kind == "exec" else k.target,
                "interval": k.interval,
                "fall": k.fall,
                "rise": k.rise,
                "vips": len(k.vips),
                "hosts": [h.name for h in c.hosts if k.name in runs[h.name]],
            }
            for k in c.checks
        ],
    }


def summary_text(plan: Plan) -> str:
    c = plan.cluster
    s = summary_json(plan)
    own = s["owners"]
    dual = any(h.address6 is not None for h in c.hosts)
    rows = [
        [h.name, h.address, *([h.address6 or "-"] if dual else []), h.interface, h.vip_interface,
         f"{h.weight:g}", h.engine, own[h.name]]
        for h in c.hosts
    ]  # fmt: skip
    d = master_down(c.advbase, 0, c.dead_ratio)
    groups = ", ".join(f"{g} ({n} VIPs)" for g, n in s["groups"].items())
    head = (
        f"{c.path}: OK: {len(c.hosts)} hosts, {len(plan.vips)} VIPs, groups {groups}\n"
        f"advbase {c.advbase}, dead ratio {c.dead_ratio}: a dead owner's VIPs move after "
        f"~{d:g} s plus the backup's skew\n"
    )
    head += "".join(f"note: {n}\n" for n in s.get("notes", ()))
    headers = ["host", "address", *(["address6"] if dual else []), "interface", "vip_interface"]
    table = tabulate(rows, headers=[*headers, "weight", "engine", "owns"])
    out = head + "\n" + table
    if c.checks:
        rows = [
            [k["name"], k.get("tcp") or k.get("http") or " ".join(k["exec"]),
             f"{k['interval']:g} s, fall {k['fall']}, rise {k['rise']}", k["vips"],
             ", ".join(k["hosts"]) or "none"]
            for k in s["checks"]
        ]  # fmt: skip
        out += "\n\n" + tabulate(rows, headers=["check", "what", "when", "VIPs", "runs on"])
    return out


def plan_text(plan: Plan) -> str:
    rows = []
    for v in plan.vips:
        prio = " ".join(
            f"{h}:{k}{'' if p else '(no preempt)'}"
            for h, k, p in zip(v.order, v.advskew, v.preempt, strict=True)
        )
        rows.append([str(v.address), v.vhid, str(v.group), v.owner, " > ".join(v.order), prio])
    return tabulate(rows, headers=["vip", "vhid", "group", "owner", "failover order", "advskew"])


def host_text(plan: Plan, host: str) -> str:
    rows = []
    for v in plan.for_host(host):
        rank = v.rank(host)
        assert rank is not None
        rows.append(
            [
                str(v.address),
                v.vhid,
                str(v.group),
                "owner" if rank == 0 else f"backup {rank}",
                v.advskew_of(host),
                "yes" if v.preempt_of(host) else "no",
                v.owner,
            ]
        )
    head = f"{host}: takes part in {len(rows)} VIPs, owns {owners(plan)[host]}\n"
    return head + tabulate(
        rows, headers=["vip", "vhid", "group", "role", "advskew", "preempt", "owner"]
    )


def fail_json(plan: Plan, failed: Iterable[str]) -> dict[str, Any]:
    down = sorted(set(failed))
    moved = []
    unserved = []
    for v in plan.vips:
        holder = v.holder(down)
        if holder is None:
            unserved.append(str(v.address))
        elif holder != v.owner:
            moved.append({"address": str(v.address), "from": v.owner, "to": holder})
    return {"down": down, "moved": moved, "unserved": unserved, "load": plan.load(down)}


def fail_text(plan: Plan, failed: Iterable[str]) -> str:
    f = fail_json(plan, failed)
    lines = [f"with {', '.join(f['down'])} down: {len(f['moved'])} VIPs move"]
    lines.append(
        tabulate(
            [[m["address"], m["from"], m["to"]] for m in f["moved"]],
            headers=["vip", "owner", "now on"],
        )
    )
    if f["unserved"]:
        lines.append(
            f"UNSERVED ({len(f['unserved'])}): {', '.join(f['unserved'])}: every host in their "
            "order is down; raise cluster.backups"
        )
    lines.append("")
    lines.append(tabulate(sorted(f["load"].items()), headers=["survivor", "VIPs held"]))
    return "\n".join(lines)


def _worst(plan: Plan, k: int) -> dict[str, Any]:
    """The failure of `k` hosts that leaves the most loaded survivor carrying most (`down`, `max`),
    and the most VIPs any failure of `k` hosts leaves unserved (`unserved`)."""
    names = plan.cluster.host_names
    if len(names) <= k:
        return {"down": None, "max": None, "unserved": None}
    base = plan.load()
    best: dict[str, Any] = {"down": None, "max": -1, "unserved": 0}
    worst_unserved = 0
    # Only VIPs of the failed hosts (or those failing over to them) move: start from the base load.
    involved: dict[str, list[Any]] = {n: [] for n in names}
    for v in plan.vips:
        for h in v.order[:k]:
            involved[h].append(v)
    for down in combinations(names, k):
        load = dict(base)
        for n in down:
            del load[n]
        seen = set()
        unserved = 0
        for n in down:
            for v in involved[n]:
                if id(v) in seen:
                    continue
                seen.add(id(v))
                before = v.holder(())
                after = v.holder(down)
                if before in load:
                    load[before] -= 1
                if after is None:
                    unserved += 1
                else:
                    load[after] += 1
        top = max(load.values())
        if top > best["max"]:
            best = {"down": list(down), "max": top}
        worst_unserved = max(worst_unserved, unserved)
    best["unserved"] = worst_unserved
    return best


def stats(plan: Plan) -> dict[str, Any]:
    """Owners per host; the worst survivor load after any one and any two failures."""
    n = len(plan.cluster.hosts)
    m = len(plan.vips)
    return {
        "owners": owners(plan),
        "ideal": {"none": _ceil(m, n), "one": _ceil(m, n - 1), "two": _ceil(m, n - 2)},
        "worst_one": _worst(plan, 1),
        "worst_two": _worst(plan, 2),
    }


def stats_text(s: dict[str, Any]) -> str:
    own = s["owners"]
    lines = [tabulate(sorted(own.items()), headers=["host", "owns"]), ""]
    for key, label, ideal in (
        ("worst_one", "one failure", "one"),
        ("worst_two", "two failures", "two"),
    ):
        w = s[key]
        if w["down"] is None:
            lines.append(f"any {label}: not applicable (too few hosts)")
            continue
        lines.append(
            f"worst after any {label}: {w['max']} VIPs on one survivor "
            f"(ideal {s['ideal'][ideal]}), e.g. with {', '.join(w['down'])} down"
            + (f"; up to {w['unserved']} VIPs unserved" if w["unserved"] else "")
        )
    return "\n".join(lines)


def _ceil(a: int, b: int) -> int | None:
    return -(-a // b) if b > 0 else None


def diff(old: Plan, new: Plan) -> dict[str, Any]:
    """VIPs added, removed, or whose owner, vhid, group or order changed."""
    o = {v.ip: v for v in old.vips}
    n = {v.ip: v for v in new.vips}
    changed = []
    for ip in _sorted(o.keys() & n.keys()):
        a, b = o[ip], n[ip]
        what = {}
        for field in ("owner", "vhid", "group", "order"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                what[field] = [_plain(x), _plain(y)]
        if what:
            changed.append({"address": str(b.address), **what})
    return {
        "added": [str(n[ip].address) for ip in _sorted(n.keys() - o.keys())],
        "removed": [str(o[ip].address) for ip in _sorted(o.keys() - n.keys())],
        "changed": changed,
    }


def _sorted(ips: Iterable[Any]) -> list[Any]:
    """IPv4 before IPv6 (addresses of two families do not compare)."""
    return sorted(ips, key=lambda ip: (ip.version, ip))


def _plain(x: Any) -> Any:
    if isinstance(x, Sequence) and not isinstance(x, str):
        return list(x)
    return x if isinstance(x, int | str) else str(x)


def diff_text(d: dict[str, Any]) -> str:
    lines = [
        f"added: {len(d['added'])}, removed: {len(d['removed'])}, changed: {len(d['changed'])}"
    ]
    for a in d["added"]:
        lines.append(f"+ {a}")
    for r in d["removed"]:
        lines.append(f"- {r}")
    for c in d["changed"]:
        parts = []
        for field in ("owner", "vhid", "group", "order"):
            if field in c:
                x, y = c[field]
                if field == "order":
                    x, y = " > ".join(x), " > ".join(y)
                parts.append(f"{field} {x} -> {y}")
        lines.append(f"~ {c['address']}: " + "; ".join(parts))
    return "\n".join(lines)
