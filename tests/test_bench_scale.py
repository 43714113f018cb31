"""The scale benchmark (bench/scale.py) cannot rot: its cluster files for every size load and plan,
and a small run (64 VIPs from 198.18.0.0/15, iprotate only, short windows) goes through every
step in its own namespaces: steady state, status and reload through the control socket, takeover,
fail-back, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from iprotate.cluster.loader import load_cluster
from iprotate.plan.planner import make_plan

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import scale  # noqa: E402

BENCH_NET = IPv4Network("198.18.0.0/15")


@pytest.mark.parametrize(("vips", "groups"), [(1, 1), (64, 2), (256, 2), (1000, 4), (4000, 16)])
def test_cluster_files_plan_every_size(vips: int, groups: int, tmp_path: Path) -> None:
    assert scale.groups_for(vips) == groups
    scale.write_password(tmp_path)
    (tmp_path / "cluster.toml").write_text(scale.cluster_toml(vips, groups))
    plan = make_plan(load_cluster(tmp_path / "cluster.toml"))
    assert len(plan.vips) == vips
    assert all(v.ip in BENCH_NET and v.address.network.prefixlen == 32 for v in plan.vips)
    assert all(v.owner == scale.OWNER for v in plan.vips)
    per_group: dict[str, list[int]] = {}
    for v in plan.vips:
        per_group.setdefault(str(v.group), []).append(v.vhid)
    assert len(per_group) == groups
    assert all(len(set(vh)) == len(vh) <= scale.PER_GROUP for vh in per_group.values())


@pytest.mark.netns
def test_a_small_scale_run_goes_through_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, str(BENCH / "scale.py"), "--sizes", "64", "--engines", "iprotate"]
    argv += ["--window", "2", "--warmup", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    (run,) = [x for x in lines if x.get("bench") == "scale"]
    assert "error" not in run, run
    ip = run["iprotate"]
    assert ip["steady"] and ip["survivor_adds_before_kill"] == 0
    assert ip["ready_s"]["alpha"] is not None and ip["ready_s"]["bravo"] is not None
    assert ip["owner"]["rss_mb"] > 0 and ip["survivor_counters"]["adverts_received"] > 0
    ctl = ip["control"]
    assert ctl["status_alpha_level"] is not None
    assert ctl["reload_one_vip_alpha_answer"] == {
        "ok": True,
        "added": 1,
        "removed": 1,
        "changed": 0,
    }
    assert ctl["owner_serves_all_again_s"] is not None
    assert ip["takeover"]["served"] == 64 and ip["takeover"]["held_after"] == 64
    # One line per VIP taken over, also from a batch large enough to defer them (a reload may
    # add one more: the VIP it moves).
    assert ip["survivor_log_to_master"] >= 64
    fb = ip["fail_back"]
    assert "all_back_s" in fb and fb["survivor_still_holds"] == 0
    cleanup = next(x for x in lines if x.get("bench") == "cleanup")
    assert cleanup["namespaces_left"] == [] and cleanup["processes_left"] == []
    assert (out / "scale.json").exists() and (out / "scale.md").read_text().startswith("# Scale")
