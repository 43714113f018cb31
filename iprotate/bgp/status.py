"""BGP mode's status document and its text: what this host announces per VIP, and its sessions.

The level follows the monitoring-plugins convention as in CARP mode: CRITICAL when no session
to any router is established (this host announces nothing to anyone), or none of one family
while this host has VIPs of that family (its /128s go over IPv6 sessions only), WARNING when
a session is down, VIPs are drained or leaving, or VIPs still wait their hold-down; OK otherwise.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def level_and_problems(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """The level of a BGP status document and the problems behind it."""
    problems = []
    sessions = doc.get("sessions", {})
    sdown = [n for n, s in sessions.items() if not s.get("established")]
    if sdown:
        problems.append(f"BGP session not established: {', '.join(sorted(sdown))}")
    drained = [v["prefix"] for v in doc.get("vips", []) if v.get("drained")]
    if drained:
        problems.append(f"{len(drained)} VIPs drained")
    down = [n for n, c in doc.get("checks", {}).items() if c.get("state") != "up"]
    if down:
        sick = sum(1 for v in doc.get("vips", []) if v.get("sick"))
        problems.append(f"check {', '.join(sorted(down))} not up: {sick} VIPs out")
    waiting = [v["prefix"] for v in doc.get("vips", []) if v.get("state") == "waiting"]
    if waiting:
        problems.append(f"{len(waiting)} VIPs in their hold-down")
    if not sessions or len(sdown) == len(sessions):
        return "CRITICAL", problems or ["no BGP session"]
    # Each family has its own sessions: all the IPv6 ones down, the /128s reach no router.
    families = {6 if ":" in v["prefix"] else 4 for v in doc.get("vips", [])}
    unserved = [
        f
        for f in sorted(families)
        if not any(s.get("established") for s in sessions.values() if s.get("family", 4) == f)
    ]
    if unserved:
        fams = " and ".join(f"IPv{f}" for f in unserved)
        return "CRITICAL", [*problems, f"no {fams} BGP session: those VIPs are announced nowhere"]
    return ("WARNING" if problems else "OK"), problems


def text(doc: dict[str, Any]) -> str:
    """`iprotate status` in BGP mode."""
    level = doc.get("level", "UNKNOWN")
    problems = doc.get("problems", [])
    head = f"IPROTATE {level} - {doc.get('host')} (BGP mode, AS {doc.get('asn')})"
    if problems:
        head += ": " + "; ".join(problems)
    sessions = tabulate(
        [[n, s.get("state"), s.get("info")] for n, s in doc.get("sessions", {}).items()],
        headers=["session", "state", "info"],
    )
    rows = [
        [v["prefix"], v["owner"], "owner" if v["rank"] == 0 else f"backup {v['rank']}",
         v["state"] + (" (drained)" if v.get("drained") else "")
         + (" (check down)" if v.get("sick") else ""), v.get("med", "-")]
        for v in doc.get("vips", [])
    ]  # fmt: skip
    vips = tabulate(rows, headers=["prefix", "owner", "here", "announced", "med"])
    return f"{head}\n\n{sessions}\n\n{vips}"
