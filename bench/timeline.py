"""The timelines of the failover and service benchmarks, and their plots: for each engine (rows)
and scenario (columns), a timeline per VIP of which host answered the client's pings
(bench/failover.py) or served its connections (bench/service.py), from half a second before the
fault until the cluster had settled again. Drawn from the results JSON alone, so `--replot
results.json` redraws them without running anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
TITLES = {
    "hard": "hard failure (SIGKILL + cable out)",
    "failback": "fail-back (cable in, restart)",
    "stop": "clean stop (SIGTERM)",
}


def pyplot() -> tuple[Any, Any]:
    """matplotlib's pyplot and Patch; ImportError without matplotlib (the `bench` extra), which
    only the plots need: the benchmarks import `runs` without it."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the benchmark runs under sudo on a server
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    return plt, Patch


def runs(
    events: Iterable[tuple[float, str]], t0: float, start: float, end: float, every: float
) -> list[list[Any]]:
    """Runs of consecutive events (a ping answered, a connection served or `failed`) with one
    outcome, taken in the order given, as [from, to, who] in seconds after t0, for the plots;
    events outside [start, end] are left out, and a gap over three intervals (`every`) ends a
    run. Each run lasts to the end of its last event's interval."""
    out: list[list[Any]] = []
    for t, who in events:
        if not start <= t <= end:
            continue
        x = t - t0
        if out and out[-1][2] == who and x - out[-1][1] <= 3 * every:
            out[-1][1] = x
        else:
            out.append([x, x, who])
    return [[round(a, 4), round(b + every, 4), w] for a, b, w in out]


def draw_vips(
    ax: Any,
    timelines: list[list[list[Any]]],
    labels: list[str],
    colour: Callable[[str], str],
    fontsize: float,
    outline: bool = False,
) -> None:
    """One scenario's axis: a row of bars per VIP, coloured by `colour(who)` (called in the
    order drawn), and its labels; `outline` draws each bar's edge too (a 10 ms bar stays
    visible)."""
    for y, timeline in enumerate(timelines):
        bars = [(a, b - a) for a, b, _ in timeline]
        cols = [colour(who) for _, _, who in timeline]
        if outline:
            for bar, c in zip(bars, cols, strict=True):
                ax.broken_barh([bar], (y - 0.4, 0.8), color=c)
        else:
            ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=cols, linewidth=0)
    ax.set_yticks(range(len(timelines)))
    ax.set_yticklabels(labels, fontsize=fontsize)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Draw the first run of every engine and scenario into one PNG at `path`."""
    plt, Patch = pyplot()
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
            draw_vips(
                ax,
                [s["vips"][ip]["timeline"] for ip in vips],
                # The last group of the address: ".10" of IPv4, "::10" of IPv6 VIPs.
                [f"{_last(ip)}{' *' if s['vips'][ip]['moved'] else ''}" for ip in vips],
                colour.__getitem__,
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


def plot_service(doc: dict[str, Any], path: Path, kinds: tuple[str, ...]) -> None:
    """bench/service.py's plot: for each engine (rows) and scenario of `kinds` (columns), a
    timeline per VIP of which host served the client's connections; red: connections never
    served."""
    from iprotate.lab.lab import NAMES

    plt, Patch = pyplot()
    results = doc["results"]
    palette = ("tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink")
    hosts = {n: palette[i % len(palette)] for i, n in enumerate(NAMES)}  # a host keeps its colour
    colours = {"failed": "tab:red"}

    def colour(who: str) -> str:
        if who not in colours:
            colours[who] = hosts.get(who, "tab:gray")
        return colours[who]

    fig, axes = plt.subplots(
        len(results), len(kinds), figsize=(6 * len(kinds), 2.2 * len(results) + 0.8),
        squeeze=False,
    )  # fmt: skip
    for row, e in enumerate(results):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            s = next(s for s in e["runs"][0]["scenarios"] if s["scenario"] == kind)
            vips = s["vips"]
            labels = [
                f"{ip} ({v['from']}→{v['to']})" if v["moved"] else ip for ip, v in vips.items()
            ]
            timelines = [v.get("timeline", []) for v in vips.values()]
            draw_vips(ax, timelines, labels, colour, fontsize=7, outline=True)
            ax.axvline(0, color="black", lw=0.8)
            if kind == "drain":
                ax.axvline(s["service_stopped_s"], color="black", lw=0.8, ls="--")
            what = "service killed" if kind == "kill" else "flag, then service stopped (dashed)"
            ax.set_title(f"{e['engine']}: {kind} ({what})", fontsize=9)
            ax.set_xlabel("seconds from the fault", fontsize=8)
    fig.legend(
        handles=[Patch(color=c, label=w) for w, c in colours.items()],
        loc="lower center", ncol=len(colours), fontsize=8,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
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
