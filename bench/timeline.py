"""The failover benchmark's plot: for each engine (rows) and scenario (columns), a timeline per VIP
of which host answered the client's pings, from half a second before the fault until the cluster
had settled again. White gaps are pings nobody answered. Drawn from the results JSON alone, so
`bench/failover.py --replot results.json` redraws it without running anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the benchmark runs under sudo on a server

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
TITLES = {
    "hard": "hard failure (SIGKILL + cable out)",
    "failback": "fail-back (cable in, restart)",
    "stop": "clean stop (SIGTERM)",
}


def plot(doc: dict[str, Any], path: Path) -> None:
    """Draw the first run of every engine and scenario into one PNG at `path`."""
    results = doc["results"]
    kinds = [k for k in TITLES if any(_scenario(e, k) for e in results)]
    hosts = sorted(
        {
            seg[2]
            for e in results
            for k in kinds
            if (s := _scenario(e, k))
            for v in s["vips"].values()
            for seg in v["timeline"]
        }
    )
    colour = {h: COLOURS[i % len(COLOURS)] for i, h in enumerate(hosts)}
    # One x range per column (the slowest engine's window), so the engines compare at a glance.
    xmax = {
        k: max(s["window_s"] for e in results if (s := _scenario(e, k)) is not None) for k in kinds
    }
    fig, axes = plt.subplots(
        len(results),
        len(kinds),
        figsize=(6.0 * len(kinds), 0.28 * 12 * len(results) + 1.6),
        squeeze=False,
        sharey="row",
    )
    for row, e in enumerate(results):
        for col, k in enumerate(kinds):
            ax = axes[row][col]
            s = _scenario(e, k)
            if s is None:
                ax.set_visible(False)
                continue
            vips = list(s["vips"])
            for y, ip in enumerate(vips):
                v = s["vips"][ip]
                bars = [(a, b - a) for a, b, _ in v["timeline"]]
                cols = [colour[h] for _, _, h in v["timeline"]]
                ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=cols, linewidth=0)
            ax.set_yticks(range(len(vips)))
            ax.set_yticklabels(
                # The last group of the address: ".10" of IPv4, "::10" of IPv6 VIPs.
                [f"{_last(ip)}{' *' if s['vips'][ip]['moved'] else ''}" for ip in vips],
                fontsize=8,
            )
            ax.set_ylim(len(vips) - 0.5, -0.5)
            ax.set_xlim(-0.5, xmax[k])
            for a, b in s.get("client_stalls", []):
                ax.axvspan(a, b, color="0.8", linewidth=0, zorder=0)
            ax.axvline(0, color="black", linewidth=1)
            if "bound_s" in s:
                ax.axvline(s["bound_s"], color="red", linestyle="--", linewidth=1)
            ax.grid(axis="x", linestyle=":", linewidth=0.5)
            ax.tick_params(axis="x", labelsize=8)
            if row == 0:
                ax.set_title(TITLES[k], fontsize=11)
            if col == 0:
                ax.set_ylabel(f"{e['engine']}\nVIP 203.0.113.x", fontsize=10)
            if row == len(results) - 1:
                ax.set_xlabel(f"seconds after the fault on {s['victim']}", fontsize=9)
    handles = [Patch(color=colour[h], label=f"answered by {h}") for h in hosts]
    handles.append(Patch(facecolor="white", edgecolor="grey", label="no answer"))
    handles.append(Patch(color="0.8", label="client sent nothing (machine busy)"))
    handles.append(plt.Line2D([], [], color="black", label="fault"))
    handles.append(plt.Line2D([], [], color="red", linestyle="--", label="protocol bound D"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(
        "Which host answered each VIP's pings (every 10 ms per VIP; * = VIP that moves); "
        "first run of each engine",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _scenario(engine: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The engine's first run of `kind`."""
    for run in engine["runs"]:
        for s in run["scenarios"]:
            if s["scenario"] == kind:
                return s
    return None


def _last(ip: str) -> str:
    """The part of a VIP that tells it from its neighbours: 10 for 203.0.113.10, ::10 for
    2001:db8:113::10."""
    return ip.rsplit(".", 1)[1] if "." in ip else "::" + ip.rsplit(":", 1)[1]
