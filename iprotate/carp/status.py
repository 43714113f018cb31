"""What `iprotate status` shows: per VIP, this host's state, the master heard on the wire, the
planned owner; peers that drift from the plan; and what is wrong, with a level. Pure: built from a
`Node`.

Levels follow the monitoring-plugins convention (the exit code of `iprotate status`):

- OK (0): every VIP has exactly one master, its planned owner; every owner is heard; no drift.
- WARNING (1): degraded but served: a VIP on a backup, a host that owns VIPs not heard, VIPs
  drained (here, or a peer advertising the drained skew 255), a health check not up here (or a
  peer advertising the sick skew 254), a VIP served here by a sick host as the last resort, a
  drifting peer, a host of the
  cluster advertising vhids our plan does not have (it runs another cluster file), adverts from
  addresses that are no host of the cluster file (a forger, or a host missing from the file).
- CRITICAL (2): a VIP with no master heard, or two.
- UNKNOWN (3): nobody answers (the client says so); or, right after the daemon started, VIPs
  whose master it has not heard yet: silence means nothing until one master-down time has passed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

from iprotate.carp.node import Node
from iprotate.plan.timing import FAREWELL_ADVBASE, FAREWELL_ADVSKEW, SICK_ADVSKEW

# A drift older than this is history (the peer was fixed or left), not a current problem.
DRIFT_RECENT = 30.0

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
# Which level wins when several apply: a CRITICAL fact outweighs not knowing the rest.
_RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}


def silence_bound(node: Node) -> float:
    """Seconds without an advert after which silence means something: a master-down time (as a
    backup would wait) and a margin. Also how long a fresh daemon waits before judging it."""
    c = node.plan.cluster
    return c.advbase * c.dead_ratio + 1.0


def worst(levels: list[str]) -> str:
    """The level that wins among `levels` (OK if there is none)."""
    return max(levels, key=_RANK.__getitem__, default=OK)


def build_status(node: Node, now: float) -> dict[str, Any]:
    """The status document (JSON-ready) of `node` at `now`."""
    c = node.plan.cluster
    names: dict[Any, str] = {h.address: h.name for h in c.hosts}
    names.update({h.address6: h.name for h in c.hosts if h.address6 is not None})
    masters = node.masters(now)
    bound = silence_bound(node)
    warming = node.started is None or now - node.started < bound
    issues: list[dict[str, str]] = []

    def issue(level: str, kind: str, text: str, **about: str) -> None:
        issues.append({"level": level, "kind": kind, "text": text, **about})

    vips = []
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
                "sick": node.checks_down(v.ip) if m and m.sick else [],
                "master": heard,
                "planned": v.owner,
                "order": list(v.order),
            }
        )
        where = f"{v.address} vhid {v.vhid}"
        if not heard and warming:
            issue(UNKNOWN, "not_heard_yet", f"{where}: no master heard yet (just started)")
        elif not heard:
            issue(CRITICAL, "no_master", f"{where}: no master heard")
        elif len(heard) > 1:
            issue(CRITICAL, "two_masters", f"{where}: two masters: {', '.join(heard)}")
        elif heard[0] != v.owner:
            issue(
                WARNING, "not_on_owner",
                f"{where}: served by {heard[0]}, not by its owner {v.owner}", owner=v.owner,
            )  # fmt: skip
        if m is not None and m.drained:
            issue(WARNING, "drained", f"{where}: drained here ({node.host})", host=node.host)
        if m is not None and m.last_resort:
            down = ", ".join(node.checks_down(v.ip)) or "?"
            issue(
                WARNING, "last_resort",
                f"{where}: served here although check {down} is down: no healthy host takes it "
                "(last resort)",
                host=node.host,
            )  # fmt: skip
        for s in node.seen.get(key, {}).values():
            # A drained master nobody relieved advertises our advbase with the skew 255.
            fresh = now - s.at <= c.advbase + 1.0
            if fresh and s.advskew == FAREWELL_ADVSKEW and s.advbase != FAREWELL_ADVBASE:
                peer = names.get(s.src, str(s.src))
                issue(WARNING, "drained", f"{where}: drained on {peer} (advertises skew 255)",
                      host=peer)  # fmt: skip
            if fresh and s.advskew == SICK_ADVSKEW and s.advbase != FAREWELL_ADVBASE:
                peer = names.get(s.src, str(s.src))
                issue(WARNING, "peer_sick",
                      f"{where}: a check is down on {peer}, which serves it as the last resort "
                      "(advertises skew 254)", host=peer)  # fmt: skip

    checks = []
    for name, st in node.health.items():
        checks.append(
            {
                "name": name,
                "host": node.host,
                "kind": st.check.kind,
                "state": st.state,
                "since": round(now - st.since, 1) if st.state != "unknown" else None,
                "detail": st.detail,
                "last_run": None if st.last_run is None else round(now - st.last_run, 1),
                "runs": st.runs,
                "failures": st.failures,
                "vips": len(st.check.vips),
            }
        )
        if st.state == "down":
            issue(WARNING, "check_down",
                  f"check {name} on {node.host}: down for {now - st.since:.0f} s: {st.detail}",
                  host=node.host)  # fmt: skip
        elif st.state == "unknown" and not warming:
            issue(WARNING, "check_down",
                  f"check {name} on {node.host}: not up yet: {st.detail}",
                  host=node.host)  # fmt: skip

    if not warming:
        heard_at = node.last_heard()
        owners = sorted({v.owner for v in node.vips.values()} - {node.host})
        for name in owners:
            h = c.host(name)
            # A dual-stack host is heard from either of its addresses.
            times = [heard_at.get(a) for a in (h.address, h.address6) if a is not None]
            last = max((t for t in times if t is not None), default=None)
            if last is None:
                issue(WARNING, "host_not_heard", f"host {name}: not heard since we started",
                      host=name)  # fmt: skip
            elif now - last > bound:
                issue(WARNING, "host_not_heard", f"host {name}: not heard for {now - last:.0f} s",
                      host=name)  # fmt: skip

    drift = []
    for (key, src), d in sorted(node.drift.items(), key=lambda kv: (_key(kv[0][0]), str(kv[0][1]))):
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
            issue(WARNING, "drift", f"{v.address} vhid {v.vhid}: drift: {src} {d.detail}",
                  host=names.get(src, str(src)))  # fmt: skip

    unknown: dict[str, list[int]] = defaultdict(list)
    for (src, _group, vhid), at in sorted(
        node.unplanned.items(), key=lambda kv: (_key(kv[0][1:]), kv[0][0].version, kv[0][0])
    ):
        # Heard lately, not just once while the hosts reloaded a new file one after the other.
        if now - at <= bound:
            unknown[names[src]].append(vhid)
    for peer, vhids in sorted(unknown.items()):
        issue(
            WARNING, "other_plan",
            f"host {peer}: advertises vhid {', '.join(map(str, sorted(set(vhids))))}, "
            "not in our plan (another cluster file?)",
            host=peer,
        )  # fmt: skip

    strangers = []
    for src, st in node.strangers.items():
        recent = now - st.last <= DRIFT_RECENT
        strangers.append(
            {"address": str(src), "sampled": st.count, "last_seen": round(now - st.last, 1)}
        )
        if recent:
            issue(
                WARNING, "not_a_host",
                f"{src}: sends adverts but is no host of the cluster file ({st.count} seen; the "
                "kernel passes 1 in 64 of them)",
                host=str(src),
            )  # fmt: skip

    level = worst([i["level"] for i in issues])
    return {
        "host": node.host,
        "level": level,
        "summary": _summary(level, issues, len(vips)),
        "warming_up": warming,
        "vips": vips,
        "checks": checks,
        "drift": drift,
        "strangers": strangers,
        "counters": dict(sorted(node.counters.items())),
        "problems": [i["text"] for i in issues],
        "issues": issues,
    }


def _key(key: tuple[Any, int]) -> tuple[int, Any, int]:
    """A (group, vhid) that sorts across families (IPv4 and IPv6 addresses do not compare)."""
    return (key[0].version, key[0], key[1])


def _summary(level: str, issues: list[dict[str, str]], vips: int) -> str:
    """One line, check-plugin style: the level, then what is wrong, worst first, with names."""
    if not issues:
        return f"IPROTATE OK - {vips} VIPs, each served by its planned owner"
    by_kind: dict[str, list[dict[str, str]]] = defaultdict(list)
    for i in issues:
        by_kind[i["kind"]].append(i)

    def hosts(kind: str, key: str = "host") -> str:
        return ", ".join(sorted({i[key] for i in by_kind[kind]}))

    phrases = {
        "two_masters": lambda n: f"{n} VIPs with two masters",
        "no_master": lambda n: f"{n} VIPs with no master",
        "not_heard_yet": lambda n: f"{n} VIPs not heard yet (just started)",
        "not_on_owner": lambda n: f"{n} VIPs not on their owner ({hosts('not_on_owner', 'owner')})",
        "host_not_heard": lambda n: f"not heard: {hosts('host_not_heard')}",
        "drained": lambda n: f"{n} VIPs drained ({hosts('drained')})",
        "check_down": lambda n: f"{n} checks down ({hosts('check_down')})",
        "last_resort": lambda n: f"{n} VIPs on a sick host as the last resort",
        "peer_sick": lambda n: f"{n} VIPs on sick peers ({hosts('peer_sick')})",
        "drift": lambda n: f"{n} drifting adverts ({hosts('drift')})",
        "other_plan": lambda n: f"another plan on {hosts('other_plan')}",
        "not_a_host": lambda n: f"adverts from {n} addresses that are no host",
    }
    parts = [say(len(by_kind[k])) for k, say in phrases.items() if k in by_kind]
    return f"IPROTATE {level} - " + "; ".join(parts)


def status_text(doc: dict[str, Any]) -> str:
    """The status document as a monitoring line, a table and a list of problems."""
    rows = [
        [
            v["address"],
            v["vhid"],
            (v["state"] or "-")
            + (" (drained)" if v["drained"] else "")
            + (f" (sick: {','.join(v['sick'])})" if v.get("sick") else ""),
            "-" if v["since"] is None else f"{v['since']:.0f}s",
            " ".join(v["master"]) or "NONE",
            v["planned"],
            "-" if v["transitions"] is None else v["transitions"],
        ]
        for v in doc["vips"]
    ]
    out = [
        doc.get("summary", "IPROTATE"),
        f"host {doc['host']}",
        tabulate(
            rows, headers=["vip", "vhid", "state here", "since", "master", "owner", "transitions"]
        ),
    ]
    checks = doc.get("checks") or []
    if checks:
        out += [
            "",
            tabulate(
                [
                    [
                        c["name"],
                        c["host"],
                        c["state"],
                        "-" if c["since"] is None else f"{c['since']:.0f}s",
                        c["detail"],
                    ]
                    for c in checks
                ],
                headers=["check", "host", "state", "since", "last output or error"],
            ),
        ]
    issues = doc.get("issues") or [{"level": "", "text": p} for p in doc["problems"]]
    if issues:
        out += ["", f"PROBLEMS ({len(issues)}):", *(f"  {i['level']} {i['text']}" for i in issues)]
    else:
        out += ["", "OK: every VIP has exactly one master, its planned owner; no drift"]
    return "\n".join(out)
