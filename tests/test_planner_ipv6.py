"""The planner with IPv6 VIPs (issue 11): the plan properties of DESIGN.md hold for files that mix
IPv4 and IPv6 VIPs, ucarp hosts are left out of IPv6 VIPs' orders, and balance is computed over
the hosts that can hold each VIP.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iprotate.cli import main
from iprotate.cluster.loader import load_cluster, parse_cluster
from iprotate.plan import report
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan
from iprotate.plan.timing import interval_key
from tests.test_planner import host_name, move_bound, within_share

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def host(name: str, k: int, engine: str = "iprotate", weight: float = 1) -> dict[str, Any]:
    h: dict[str, Any] = {"name": name, "address": f"198.51.100.{k}", "weight": weight}
    if engine == "ucarp":
        h["engine"] = "ucarp"
    else:
        h["address6"] = f"2001:db8::{k:x}"
    return h


def mixed_doc(hosts: list[dict[str, Any]], m4: int, m6: int, **cluster: Any) -> dict[str, Any]:
    vips: list[dict[str, Any]] = []
    if m4:
        vips.append({"pool": f"203.0.113.1-203.0.113.{m4}/24"})
    if m6:
        vips.append({"pool": f"2001:db8:200::1-2001:db8:200::{m6:x}/64"})
    return {
        "cluster": {"interface": "eth1", "password": "s3cret", **cluster},
        "hosts": hosts,
        "vips": vips,
    }


def plan_of(data: dict[str, Any]) -> Plan:
    return make_plan(parse_cluster(data, "test.toml"))


@st.composite
def mixed(
    draw: st.DrawFn, ucarp: bool = True, weighted: bool = False, min_hosts: int = 1
) -> dict[str, Any]:
    n = draw(st.integers(min_hosts, 9))
    names = draw(st.lists(host_name, min_size=n, max_size=n, unique=True))
    engines = [
        draw(st.sampled_from(["iprotate", "iprotate", "ucarp"])) if ucarp else "iprotate"
        for _ in names
    ]
    if all(e == "ucarp" for e in engines):
        engines[0] = "iprotate"
    weights = [draw(st.sampled_from([0.5, 1, 2, 3])) if weighted else 1 for _ in names]
    hosts = [
        host(nm, k + 1, e, w)
        for k, (nm, e, w) in enumerate(zip(names, engines, weights, strict=True))
    ]
    m4 = draw(st.integers(0, 120))
    m6 = draw(st.integers(1 if m4 == 0 else 0, 120))
    backups = draw(st.sampled_from([1, 2, 3]))
    return mixed_doc(hosts, m4, m6, backups=backups)


def family(plan: Plan, version: int) -> list[Any]:
    return [v for v in plan.vips if v.ip.version == version]


@SETTINGS
@given(mixed(weighted=True))
def test_ucarp_hosts_never_in_ipv6_orders_and_each_family_is_balanced(data: dict[str, Any]) -> None:
    plan = plan_of(data)
    c = plan.cluster
    for version in (4, 6):
        vips = family(plan, version)
        able = [h for h in c.hosts if version == 4 or h.engine != "ucarp"]
        names = {h.name for h in able}
        for v in vips:
            assert set(v.order) <= names, (v.address, v.order)
            assert len(set(v.order)) == len(v.order)
            assert len(v.order) == min(len(able), c.backups + 1)
            # Safe priorities: distinct skews rising with rank, so CARP elects the plan's order.
            keys = [interval_key(c.advbase, k) for k in v.advskew]
            assert keys == sorted(set(keys))
        own = Counter(v.owner for v in vips)
        total = sum(h.weight for h in able)
        for h in able:
            assert within_share(own[h.name], len(vips) * h.weight / total), (version, h.name, own)


@SETTINGS
@given(mixed(ucarp=False, min_hosts=2))
def test_equal_iprotate_hosts_own_floor_or_ceil_of_all_vips(data: dict[str, Any]) -> None:
    """No ucarp host, equal weights: each family balanced and the total too (the IPv6 pass gives
    its odd VIPs to the hosts the IPv4 pass gave fewer)."""
    plan = plan_of(data)
    n, m = len(plan.cluster.hosts), len(plan.vips)
    for name, k in report.owners(plan).items():
        assert within_share(k, m / n), (name, k, m, n)
    # Single failure: each owner's VIPs of each family spread evenly over the others.
    for version in (4, 6):
        to: dict[str, Counter[str]] = {}
        for v in family(plan, version):
            if len(v.order) > 1:
                to.setdefault(v.owner, Counter())[v.order[1]] += 1
        for owner, c in to.items():
            counts = [c[h] for h in plan.cluster.host_names if h != owner]
            assert max(counts) - min(counts) <= 1, (version, owner, c)


@SETTINGS
@given(mixed())
def test_adding_ipv6_vips_never_changes_the_ipv4_plan(data: dict[str, Any]) -> None:
    v4_only = {**data, "vips": [v for v in data["vips"] if ":" not in v["pool"]]}
    if not v4_only["vips"]:
        return
    a = [v.to_json() for v in family(plan_of(data), 4)]
    b = [v.to_json() for v in plan_of(v4_only).vips]
    assert a == b


@SETTINGS
@given(mixed(), st.randoms(use_true_random=False))
def test_mixed_plans_are_deterministic_whatever_the_host_order(
    data: dict[str, Any], rnd: Any
) -> None:
    hosts = data["hosts"][:]
    rnd.shuffle(hosts)
    a = json.dumps([v.to_json() for v in plan_of(data).vips])
    b = json.dumps([v.to_json() for v in plan_of({**data, "hosts": hosts}).vips])
    assert a == b


def dual_file() -> dict[str, Any]:
    return mixed_doc(
        [host("alpha", 1), host("bravo", 2), host("charlie", 3), host("delta", 4, "ucarp")], 8, 6
    )


def test_three_iprotate_hosts_and_a_ucarp_host() -> None:
    plan = plan_of(dual_file())
    own4 = Counter(v.owner for v in family(plan, 4))
    own6 = Counter(v.owner for v in family(plan, 6))
    assert own4 == {"alpha": 2, "bravo": 2, "charlie": 2, "delta": 2}
    assert own6 == {"alpha": 2, "bravo": 2, "charlie": 2}
    assert all("delta" not in v.order for v in family(plan, 6))
    assert {str(v.group) for v in family(plan, 6)} == {"ff02::12"}
    assert [v.vhid for v in family(plan, 6)] == [1, 2, 3, 4, 5, 6]
    assert {v.vhid for v in family(plan, 4)} == set(range(1, 9))  # another group: no collision


def test_check_and_plan_say_so(tmp_path: Any) -> None:
    from tests.test_config import write

    p = write(tmp_path, dual_file())
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code == 0, r.output
    assert "groups 224.0.0.18 (8 VIPs), ff02::12 (6 VIPs)" in r.output
    assert (
        "note: delta (ucarp) take(s) no part in the 6 IPv6 VIPs: ucarp speaks no IPv6" in r.output
    )
    assert "address6" in r.output and "2001:db8::1" in r.output
    r = CliRunner().invoke(main, ["check", "--json", str(p)])
    s = json.loads(r.stdout)
    assert s["ipv6_vips"] == 6 and "delta (ucarp)" in s["notes"][0]
    r = CliRunner().invoke(main, ["plan", str(p)])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("2001:db8:200::3/64"))
    assert " 3 " in line and "ff02::12" in line and "delta" not in line
    r = CliRunner().invoke(main, ["plan", "--json", str(p)])
    j = json.loads(r.stdout)
    assert j["hosts"][0]["address6"] == "2001:db8::1" and "address6" not in j["hosts"][3]
    r = CliRunner().invoke(main, ["plan", "--fail", "alpha", "--fail", "bravo", str(p)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["plan", "--stats", str(p)])
    assert r.exit_code == 0, r.output


def test_plan_diff_across_families(tmp_path: Any) -> None:
    from tests.test_config import write

    old = write(tmp_path, mixed_doc([host("alpha", 1), host("bravo", 2)], 3, 0), "old.toml")
    new = write(tmp_path, mixed_doc([host("alpha", 1), host("bravo", 2)], 3, 2), "new.toml")
    r = CliRunner().invoke(main, ["plan", str(new), "--diff", str(old), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == ["2001:db8:200::1/64", "2001:db8:200::2/64"]


def test_ipv4_only_summary_unchanged() -> None:
    """No IPv6 VIP: no address6 column, no notes, no new JSON keys (IPv4 output as before)."""
    data = mixed_doc([host("alpha", 1, "ucarp"), host("bravo", 2, "ucarp")], 4, 0)
    plan = plan_of(data)
    s = report.summary_json(plan)
    assert "ipv6_vips" not in s and "notes" not in s
    assert "address6" not in report.summary_text(plan)


def test_ucarp_export_leaves_ipv6_vips_out_and_says_so(tmp_path: Any) -> None:
    """Even for an iprotate host (whose lines are for when it cannot run iprotate): ucarp gets
    only the IPv4 VIPs, and a note on stderr says why the IPv6 ones are missing."""
    from tests.test_config import write

    p = write(tmp_path, dual_file())
    r = CliRunner().invoke(main, ["ucarp", str(p), "--host", "alpha", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    addrs = [i["address"] for i in doc["instances"]]
    assert addrs and all(":" not in a for a in addrs)
    assert "IPv6 VIP(s), left out here: ucarp speaks no IPv6" in r.stderr


REPO = Path(__file__).resolve().parent.parent


def test_readme_dual_stack_example_is_what_plan_prints(tmp_path: Path) -> None:
    """The README's dual-stack `plan` output is the real output for examples/dual-stack.toml,
    and its claims hold for that file: delta (ucarp) is in no IPv6 order, owners balanced."""
    shutil.copy(REPO / "examples" / "dual-stack.toml", tmp_path / "dual-stack.toml")
    (tmp_path / "secret").write_text("s3cret-pass\n")
    (tmp_path / "secret").chmod(0o600)
    r = CliRunner().invoke(main, ["plan", str(tmp_path / "dual-stack.toml")])
    assert r.exit_code == 0, r.output
    readme = (REPO / "README.md").read_text()
    block = readme.split("$ iprotate plan examples/dual-stack.toml\n", 1)[1].split("```", 1)[0]
    assert block == r.stdout
    plan = make_plan(load_cluster(tmp_path / "dual-stack.toml"))
    assert all("delta" not in v.order for v in family(plan, 6))
    assert sorted(report.owners(plan).values()) == [1, 2, 2, 2]


@SETTINGS
@given(mixed(min_hosts=3), st.data())
def test_removing_a_host_moves_its_ipv6_vips_and_few_others(
    data: dict[str, Any], rnd: st.DataObject
) -> None:
    """Stability per family: removing an iprotate host moves its own IPv6 VIPs and few others
    (the bound of test_planner.py, over the hosts that can hold IPv6 VIPs)."""
    able = [h for h in data["hosts"] if h.get("engine") != "ucarp"]
    if len(able) < 2:
        return
    gone = rnd.draw(st.sampled_from([h["name"] for h in able]))
    full = plan_of(data)
    smaller = plan_of({**data, "hosts": [h for h in data["hosts"] if h["name"] != gone]})
    a = {v.ip: v.owner for v in family(full, 6)}
    b = {v.ip: v.owner for v in family(smaller, 6)}
    extra = sum(1 for ip, o in a.items() if o != gone and b[ip] != o)
    assert all(gone not in v.order for v in smaller.vips)
    assert extra <= move_bound(len(a), len(able)), (extra, len(a), len(able))
