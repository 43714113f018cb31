"""The cluster-file loader: one test per problem it must report, and what a good file loads into.

Every problem must name the file and the key path and say what is allowed (DESIGN.md, "The cluster
file"). Problems the planner finds (vhid collisions, more than 255 VIPs in a group, advbase 0 with a
ucarp backup) come out of `make_plan` as the same ClusterError.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from iprotate.cli import main
from iprotate.cluster.bounds import RUN_SECONDS, check_seconds
from iprotate.cluster.loader import load_cluster, parse_cluster
from iprotate.cluster.model import DEFAULT_GROUP, Cluster, ClusterError, Host, Vip
from iprotate.plan.planner import make_plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# --- writing files -------------------------------------------------------------------------------


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML: top-level keys, tables (one level of sub-tables), arrays of tables."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [f"{k} = {_value(v)}" for k, v in data.items() if isinstance(v, list) and not v]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_value(vv)}" for kk, vv in v.items() if not isinstance(vv, dict)]
            for kk, vv in v.items():
                if isinstance(vv, dict):
                    lines.append(f"\n[{k}.{kk}]")
                    lines += [f"{a} = {_value(b)}" for a, b in vv.items()]
        elif isinstance(v, list) and v:
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def base() -> dict[str, Any]:
    """A valid cluster: three hosts, four [[vips]] entries (vips[2] is a pool of ten)."""
    return {
        "cluster": {"interface": "eth1", "password": "s3cret-pass"},
        "hosts": [
            {"name": "alpha", "address": "198.51.100.1"},
            {"name": "bravo", "address": "198.51.100.2"},
            {"name": "charlie", "address": "198.51.100.3", "engine": "ucarp"},
        ],
        "vips": [
            {"address": "203.0.113.10/24"},
            {"address": "203.0.113.11/24", "owner": "alpha"},
            {"pool": "203.0.113.20-203.0.113.29/24"},
            {"address": "203.0.113.12/24", "vhid": 200},
        ],
    }


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "cluster.toml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else to_toml(data))
    return p


def problems(path: Path) -> list[str]:
    """Every line of the ClusterError that loading (and planning) `path` raises."""
    with pytest.raises(ClusterError) as e:
        make_plan(load_cluster(path))
    assert e.value.path == str(path)
    lines = str(e.value).splitlines()
    assert lines and len(lines) == len(e.value.problems)
    for line in lines:
        assert line.startswith(f"{path}: "), line  # every line names the file
    return lines


def problem(path: Path, key: str) -> str:
    """The one problem reported for `key` (the text after `file: key: `)."""
    lines = problems(path)
    found = [ln for ln in lines if ln.startswith(f"{path}: {key}: ")]
    assert len(found) == 1, (key, lines)
    return found[0][len(f"{path}: {key}: ") :]


def bad(tmp_path: Path, change: Any) -> Path:
    """Write base() after `change(data)` edits it."""
    data = base()
    change(data)
    return write(tmp_path, data)


def test_base_is_valid(tmp_path: Path) -> None:
    plan = make_plan(load_cluster(write(tmp_path, base())))
    assert len(plan.vips) == 13


# --- the file itself -----------------------------------------------------------------------------


def test_not_toml(tmp_path: Path) -> None:
    p = write(tmp_path, "[cluster\ninterface = eth1\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}: not a valid TOML file: ")
    assert "line 1" in line


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "cluster.toml"
    p.write_bytes(b"[cluster]\ninterface = '\xff'\n")
    (line,) = problems(p)
    assert "not a valid TOML file" in line


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    (line,) = problems(p)
    assert line == f"{p}: cannot read the file: No such file or directory"


# --- missing sections and keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("cluster", "missing: the file needs a [cluster] table"),
        ("hosts", "missing: the file needs at least one [[hosts]] entry"),
        ("vips", "missing: the file needs at least one [[vips]] entry"),
    ],
)
def test_missing_section(tmp_path: Path, section: str, message: str) -> None:
    p = bad(tmp_path, lambda d: d.pop(section))
    # Without [cluster] its password and the hosts' interface are missing too: said as well.
    assert f"{p}: {section}: {message}" in problems(p)


def test_empty_sections(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["hosts"] = []
        d["vips"] = []

    p = bad(tmp_path, change)
    assert problem(p, "hosts").startswith("missing: ")
    assert problem(p, "vips").startswith("missing: ")


def test_sections_of_the_wrong_shape(tmp_path: Path) -> None:
    p = write(tmp_path, 'cluster = 1\nhosts = "alpha"\nvips = 3\n')
    assert f"{p}: cluster: must be a table: the file needs a [cluster] table" in problems(p)
    assert problem(p, "hosts").startswith("must be an array of tables: ")
    assert problem(p, "vips").startswith("must be an array of tables: ")


def test_host_name_missing(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][1].pop("name"))
    assert problem(p, "hosts[1].name") == "missing (letters, digits, '_.-', 1..63)"


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 64, 7])
def test_host_name_bad(tmp_path: Path, name: Any) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][1].update(name=name))
    assert (
        problem(p, "hosts[1].name")
        == f"{name!r} is not a host name (letters, digits, '_.-', 1..63)"
    )


def test_host_address_missing(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][2].pop("address"))
    assert problem(p, "hosts[2].address") == "missing (like '198.51.100.1')"


def test_host_without_a_name_still_has_its_other_keys_checked(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        del d["hosts"][0]["name"]
        d["hosts"][0].update(address="198.51.100.256", weight=0)

    p = bad(tmp_path, change)
    assert problem(p, "hosts[0].name").startswith("missing")
    assert problem(p, "hosts[0].address").startswith("'198.51.100.256' is not an IPv4 address")
    assert problem(p, "hosts[0].weight").startswith("0 is not a number in (0, 100]")


def test_host_interface_missing(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].pop("interface"))
    for i in range(3):
        assert problem(p, f"hosts[{i}].interface") == "missing: set it here or in [cluster]"


def test_vip_needs_address_or_pool(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][1].pop("address"))
    assert problem(p, "vips[1]") == (
        "give exactly one of `address` (one VIP) or `pool` (a range of VIPs)"
    )
    p = bad(tmp_path, lambda d: d["vips"][1].update(pool="203.0.113.40-203.0.113.41/24"))
    assert "give exactly one of `address`" in problem(p, "vips[1]")


# --- unknown keys: typos must not pass -----------------------------------------------------------

CLUSTER_ALLOWED = (
    "advbase, backups, dead_ratio, down_script, interface, multicast, multicast6, password, "
    "password_file, preempt, up_script, vip_interface"
)
HOST_ALLOWED = (
    "address, address6, bgp_asn, bgp_routers, engine, interface, name, preempt, vip_interface, "
    "weight"
)
VIP_ALLOWED = "address, down_script, group, owner, pool, up_script, vhid"


@pytest.mark.parametrize(
    ("change", "key", "allowed"),
    [
        (
            lambda d: d.update(clusters={"x": 1}),
            "clusters",
            "bgp, checks, cluster, hosts, run, vips",
        ),
        (lambda d: d.update(version=2), "version", "bgp, checks, cluster, hosts, run, vips"),
        (lambda d: d["cluster"].update(advbse=1), "cluster.advbse", CLUSTER_ALLOWED),
        (lambda d: d["cluster"].update(extra={"a": 1}), "cluster.extra", CLUSTER_ALLOWED),
        (lambda d: d["hosts"][1].update(adress="198.51.100.9"), "hosts[1].adress", HOST_ALLOWED),
        (lambda d: d["hosts"][0].update(weigth=2), "hosts[0].weigth", HOST_ALLOWED),
        (lambda d: d["vips"][1].update(onwer="alpha"), "vips[1].onwer", VIP_ALLOWED),
        (lambda d: d["vips"][2].update(vhids=1), "vips[2].vhids", VIP_ALLOWED),
    ],
)
def test_unknown_key(tmp_path: Path, change: Any, key: str, allowed: str) -> None:
    p = bad(tmp_path, change)
    assert problem(p, key) == f"unknown key (allowed: {allowed})"


# --- addresses and pools -------------------------------------------------------------------------

IFACE_ALLOWED = "is not an IPv4 interface address (like '203.0.113.10/24')"


@pytest.mark.parametrize(
    "address",
    ["203.0.113.300/24", "203.0.113.10", "203.0.113.10/33", "203.0.113.10/24x", "203.0.113/24"],
)
def test_vip_address_bad(tmp_path: Path, address: str) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(address=address))
    assert problem(p, "vips[3].address") == f"{address!r} {IFACE_ALLOWED}"


def test_vip_address_not_a_string(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(address=12))
    assert problem(p, "vips[3].address") == f"12 {IFACE_ALLOWED}"


@pytest.mark.parametrize(
    "address", ["224.0.0.18/24", "127.0.0.2/8", "0.0.0.0/24", "240.0.0.5/24", "255.255.255.255/32"]
)
def test_vip_address_unusable(tmp_path: Path, address: str) -> None:
    p = bad(tmp_path, lambda d: d["vips"][0].update(address=address))
    assert problem(p, "vips[0].address") == (
        f"{address!r} cannot be a virtual address (multicast, loopback, 0.0.0.0, 240/4)"
    )


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("203.0.113.0/24", "is the network address of 203.0.113.0/24"),
        ("203.0.113.255/24", "is the broadcast address of 203.0.113.0/24"),
        ("203.0.113.7/30", "is the broadcast address of 203.0.113.4/30"),
        ("203.0.113.10/0", "a prefix shorter than /8 is not a subnet to serve"),
        ("169.254.1.1/16", "cannot be a virtual address (link-local, 169.254/16)"),
    ],
)
def test_vip_address_not_servable(tmp_path: Path, address: str, why: str) -> None:
    p = bad(tmp_path, lambda d: d["vips"][0].update(address=address))
    assert why in problem(p, "vips[0].address")


@pytest.mark.parametrize("address", ["203.0.113.0/31", "203.0.113.0/32", "203.0.113.255/32"])
def test_vip_point_to_point_and_host_prefixes_have_no_network_address(
    tmp_path: Path, address: str
) -> None:
    p = bad(tmp_path, lambda d: d["vips"][0].update(address=address, vhid=200))
    c = load_cluster(p)
    assert str(c.vips[0].address) == address


@pytest.mark.parametrize("address", ["198.51.100.300", "198.51.100.1/24", "alpha", ""])
def test_host_address_bad(tmp_path: Path, address: str) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][0].update(address=address))
    assert (
        problem(p, "hosts[0].address")
        == f"{address!r} is not an IPv4 address (like '198.51.100.1')"
    )


POOL_HOW = "like '203.0.113.10-203.0.113.40/24' (first-last/prefix)"


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("203.0.113.20..203.0.113.29/24", f"is not a pool {POOL_HOW}"),
        ("203.0.113.20-203.0.113.29", f"is not a pool {POOL_HOW}"),
        ("203.0.113.20-203.0.113.25-203.0.113.29/24", f"is not a pool {POOL_HOW}"),
        ("203.0.113.29-203.0.113.20/24", "the last address must follow the first, at most 65536"),
        ("203.0.113.250-203.0.114.5/24", "first and last are not in one /24 network"),
        ("203.0.113.20-203.0.113.29/33", f"is not a pool {POOL_HOW}: '203.0.113.20/33' is not"),
        ("203.0.113.20-203.0.113.x/24", f"is not a pool {POOL_HOW}: '203.0.113.x/24' is not"),
    ],
)
def test_pool_bad(tmp_path: Path, pool: str, message: str) -> None:
    p = bad(tmp_path, lambda d: d["vips"][2].update(pool=pool))
    got = problem(p, "vips[2].pool")  # one problem, not one per end
    assert got.startswith(f"{pool!r}")
    assert message in got


def test_pool_not_a_string(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][2].update(pool=["203.0.113.20", "203.0.113.29"]))
    assert problem(p, "vips[2].pool").endswith(f"is not a pool {POOL_HOW}")


def test_pool_loads_every_address(tmp_path: Path) -> None:
    c = load_cluster(write(tmp_path, base()))
    pool = [v for v in c.vips if v.source.startswith("vips[2]")]
    assert [v.source for v in pool] == [f"vips[2].pool[{j}]" for j in range(10)]
    assert [str(v.address) for v in pool] == [f"203.0.113.{20 + j}/24" for j in range(10)]


# --- duplicates ----------------------------------------------------------------------------------


def test_duplicate_vip(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(address="203.0.113.10/25"))
    assert problem(p, "vips[3]") == "203.0.113.10 is already vips[0]"


def test_duplicate_vip_across_pool_and_address(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(address="203.0.113.25/24"))
    assert problem(p, "vips[3]") == "203.0.113.25 is already vips[2].pool[5]"
    p = bad(tmp_path, lambda d: d["vips"][2].update(pool="203.0.113.5-203.0.113.14/24"))
    lines = problems(p)
    assert f"{p}: vips[2].pool[5]: 203.0.113.10 is already vips[0]" in lines
    assert f"{p}: vips[2].pool[6]: 203.0.113.11 is already vips[1]" in lines


def test_duplicate_vip_across_pools(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"].append({"pool": "203.0.113.28-203.0.113.31/24"}))
    lines = problems(p)
    assert f"{p}: vips[4].pool[0]: 203.0.113.28 is already vips[2].pool[8]" in lines
    assert f"{p}: vips[4].pool[1]: 203.0.113.29 is already vips[2].pool[9]" in lines


def test_duplicate_host_name(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][2].update(name="alpha"))
    assert problem(p, "hosts[2].name") == "'alpha' is already hosts[0]"


def test_duplicate_host_address(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][2].update(address="198.51.100.2"))
    assert problem(p, "hosts[2].address") == "198.51.100.2 is already the address of hosts[1]"


def test_vip_is_a_host_address(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(address="198.51.100.2/24"))
    assert problem(p, "vips[3]") == "198.51.100.2 is the address of host 'bravo'"


# --- owners and vhids ----------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["delta", "Alpha", 1, ["alpha"]])
def test_owner_is_no_host(tmp_path: Path, owner: Any) -> None:
    p = bad(tmp_path, lambda d: d["vips"][1].update(owner=owner))
    assert problem(p, "vips[1].owner") == (
        f"{owner!r} is not the name of a host (alpha, bravo, charlie)"
    )


@pytest.mark.parametrize("vhid", [0, 256, -1, "10", 10.0, True])
def test_vhid_out_of_range(tmp_path: Path, vhid: Any) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(vhid=vhid))
    assert problem(p, "vips[3].vhid") == f"{vhid!r} is not an integer in 1..255"


def test_pool_vhid_base_runs_past_255(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][2].update(vhid=250))
    assert problem(p, "vips[2].vhid") == "250 + 10 addresses needs vhids up to 259; at most 255"
    # 246 + 10 ends at 255 exactly: fine.
    c = load_cluster(bad(tmp_path, lambda d: d["vips"][2].update(vhid=246)))
    assert [v.vhid for v in c.vips if v.source.startswith("vips[2]")] == list(range(246, 256))


def test_vhid_used_twice_in_one_group(tmp_path: Path) -> None:
    # vips[3] pins vhid 20, which vips[2].pool[0] (203.0.113.20) derives from its last octet.
    p = bad(tmp_path, lambda d: d["vips"][3].update(vhid=20))
    assert problem(p, "vips[3]") == (
        "vhid 20 (pinned) of 203.0.113.12 is already used by 203.0.113.20 (vips[2].pool[0]) in "
        "group 224.0.0.18; pin another `vhid` or give one of them another `group`"
    )


def test_vhid_pinned_twice_in_one_group(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][0].update(vhid=200))
    assert problem(p, "vips[3]") == (
        "vhid 200 (pinned) of 203.0.113.12 is already used by 203.0.113.10 (vips[0]) in "
        "group 224.0.0.18; pin another `vhid` or give one of them another `group`"
    )


def test_same_vhid_in_two_groups_is_fine(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][3].update(vhid=20, group="224.0.0.19"))
    plan = make_plan(load_cluster(p))
    assert {(str(v.group), v.vhid) for v in plan.vips if v.vhid == 20} == {
        ("224.0.0.18", 20),
        ("224.0.0.19", 20),
    }


def test_vhid_cannot_be_derived_from_last_octet_0(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][0].update(address="203.0.113.0/32"))
    assert problem(p, "vips[0]") == (
        "cannot derive a vhid from 203.0.113.0 (last octet 0); pin one with `vhid = N` (1..255)"
    )


def test_more_than_255_vips_in_one_group(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["vips"] = [{"pool": "203.0.113.1-203.0.113.255/32"}, {"address": "203.0.113.0/32"}]

    p = bad(tmp_path, change)
    assert problem(p, "vips") == (
        "group 224.0.0.18 would carry 256 VIPs, at most 255 fit (vhid 1..255): "
        "give some [[vips]] entries another `group`"
    )


# --- password ------------------------------------------------------------------------------------


def test_password_empty(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(password=""))
    assert problem(p, "cluster.password") == "the password is empty"


@pytest.mark.parametrize("password", ["x" * 20, "é" * 10])  # 20 bytes either way
def test_password_over_19_bytes(tmp_path: Path, password: str) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(password=password))
    assert problem(p, "cluster.password") == "the password is 20 bytes; ucarp allows at most 19"


def test_password_19_bytes_is_fine(tmp_path: Path) -> None:
    c = load_cluster(bad(tmp_path, lambda d: d["cluster"].update(password="x" * 19)))
    assert c.password == b"x" * 19


def test_password_not_a_string(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(password=1234))
    assert problem(p, "cluster.password") == "must be a string"


def test_password_with_nul(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(password="ab\u0000cd"))
    assert problem(p, "cluster.password") == (
        "the password contains a NUL byte; ucarp would cut it there"
    )


def with_password_file(tmp_path: Path, content: bytes | None, mode: int = 0o600) -> Path:
    """base() with `password_file = "secret"`; the secret written (if not None) with `mode`."""

    def change(d: dict[str, Any]) -> None:
        del d["cluster"]["password"]
        d["cluster"]["password_file"] = "secret"

    if content is not None:
        s = tmp_path / "secret"
        s.write_bytes(content)
        s.chmod(mode)
    return bad(tmp_path, change)


def test_password_file_missing(tmp_path: Path) -> None:
    p = with_password_file(tmp_path, None)
    assert problem(p, "cluster.password_file") == (
        f"cannot read {tmp_path / 'secret'}: No such file or directory"
    )


def test_password_file_unreadable(tmp_path: Path) -> None:
    p = with_password_file(tmp_path, None)
    (tmp_path / "secret").mkdir()  # unreadable for root too
    assert problem(p, "cluster.password_file") == (
        f"cannot read {tmp_path / 'secret'}: not a regular file"
    )


def test_password_file_without_permission(tmp_path: Path) -> None:
    p = with_password_file(tmp_path, b"pw\n", mode=0o000)
    want = f"cannot read {tmp_path / 'secret'}: Permission denied"
    if os.geteuid() != 0:
        assert problem(p, "cluster.password_file") == want
        return
    # Root reads a mode 000 file: ask as nobody, in a forked child (no exec, so no interpreter
    # path to reach), who can read the cluster file but not the secret.
    for d in (tmp_path, *tmp_path.parents):
        if d.stat().st_mode & 0o005 != 0o005:
            d.chmod(d.stat().st_mode | 0o005)
    p.chmod(0o644)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            load_cluster(p)
            msg = "loaded"
        except ClusterError as e:
            msg = str(e)
        except BaseException as e:
            msg = repr(e)
        os.write(wfd, msg.encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        got = f.read()
    os.waitpid(pid, 0)
    assert f"cluster.password_file: {want}" in got, got


def test_password_file_is_relative_to_the_cluster_file(tmp_path: Path, monkeypatch: Any) -> None:
    p = with_password_file(tmp_path, b"pw\n")
    monkeypatch.chdir("/")
    assert load_cluster(p).password == b"pw"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_password_file_open_to_others_is_a_warning(tmp_path: Path, mode: int) -> None:
    c = load_cluster(with_password_file(tmp_path, b"pw\n", mode=mode))
    assert c.password == b"pw"
    assert c.warnings == (
        f"cluster.password_file: {tmp_path / 'secret'} is readable or writable by others "
        f"(mode {mode:o}); chmod 600 it",
    )


def test_password_file_private_no_warning(tmp_path: Path) -> None:
    assert load_cluster(with_password_file(tmp_path, b"pw\n", mode=0o400)).warnings == ()


@pytest.mark.parametrize(
    ("content", "password"),
    [
        (b"s3cret\n", b"s3cret"),
        (b"s3cret", b"s3cret"),
        (b" spaced out \nsecond line\n", b" spaced out "),
        (b"dos\r\n", b"dos\r"),  # only the '\n' goes, as with ucarp --passfile
        (b"tab\t\n\n", b"tab\t"),
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
)
def test_password_file_first_line_only_newline_stripped(
    tmp_path: Path, content: bytes, password: bytes
) -> None:
    assert load_cluster(with_password_file(tmp_path, content)).password == password


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the password is empty"),
        (b"\nsecond line\n", "the password is empty"),
        (b"x" * 20 + b"\n", "the password is 20 bytes; ucarp allows at most 19"),
    ],
)
def test_password_file_bad_content(tmp_path: Path, content: bytes, message: str) -> None:
    p = with_password_file(tmp_path, content)
    assert problem(p, "cluster.password_file") == message


def test_password_and_password_file(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(password_file="secret"))
    assert problem(p, "cluster") == "give exactly one of `password` or `password_file`"


def test_neither_password_nor_password_file(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].pop("password"))
    assert problem(p, "cluster") == "give exactly one of `password` or `password_file`"


# --- timing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("advbase", [-1, 256, 1.5, "1", True])
def test_advbase_out_of_range(tmp_path: Path, advbase: Any) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(advbase=advbase))
    assert problem(p, "cluster.advbase") == f"{advbase!r} is not an integer in 0..255"


@pytest.mark.parametrize("dead_ratio", [0, 256, -3, 3.0])
def test_dead_ratio_out_of_range(tmp_path: Path, dead_ratio: Any) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(dead_ratio=dead_ratio))
    assert problem(p, "cluster.dead_ratio") == f"{dead_ratio!r} is not an integer in 1..255"


@pytest.mark.parametrize(("advbase", "dead_ratio"), [(0, 1), (255, 255)])
def test_timing_limits_are_accepted(tmp_path: Path, advbase: int, dead_ratio: int) -> None:
    def change(d: dict[str, Any]) -> None:
        d["cluster"].update(advbase=advbase, dead_ratio=dead_ratio)
        d["hosts"][2]["engine"] = "iprotate"

    c = load_cluster(bad(tmp_path, change))
    assert (c.advbase, c.dead_ratio) == (advbase, dead_ratio)
    make_plan(c)


def test_advbase_0_with_a_ucarp_backup(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(advbase=0))
    assert problem(p, "cluster.advbase") == (
        "0 (sub-second) would make ucarp host(s) charlie a backup, and ucarp backups flap below "
        "1 s; use advbase >= 1 or run iprotate there"
    )


# --- hosts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0, -1, 0.0, "2", True, float("nan"), float("inf")])
def test_weight_not_positive(tmp_path: Path, weight: Any) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][1].update(weight=weight))
    assert problem(p, "hosts[1].weight") == f"{weight!r} is not a number in (0, 100]"


@pytest.mark.parametrize("engine", ["openbsd", "UCARP", "", 1])
def test_engine_unknown(tmp_path: Path, engine: Any) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][2].update(engine=engine))
    assert problem(p, "hosts[2].engine") == (
        f"{engine!r} is not one of 'iprotate', 'ucarp', 'freebsd', 'keepalived'"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cluster.interface", "eth 1"),
        ("cluster.interface", "a-very-long-interface-name"),
        ("hosts[0].interface", "eth1:0"),
        ("hosts[1].vip_interface", ""),
    ],
)
def test_interface_name_bad(tmp_path: Path, key: str, value: str) -> None:
    def change(d: dict[str, Any]) -> None:
        if key.startswith("cluster."):
            d["cluster"][key.split(".")[1]] = value
        else:
            d["hosts"][int(key[6])][key.split(".")[1]] = value

    p = bad(tmp_path, change)
    assert problem(p, key) == (
        f"{value!r} is not an interface name (1..15 characters, no '/', ':' or space)"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("cluster.preempt", "yes"), ("hosts[1].preempt", 1), ("cluster.backups", 256)],
)
def test_other_cluster_and_host_values(tmp_path: Path, key: str, value: Any) -> None:
    def change(d: dict[str, Any]) -> None:
        if key.startswith("cluster."):
            d["cluster"][key.split(".")[1]] = value
        else:
            d["hosts"][1][key.split(".")[1]] = value

    p = bad(tmp_path, change)
    allowed = "is not an integer in 0..255" if key.endswith("backups") else "is not true or false"
    assert problem(p, key) == f"{value!r} {allowed}"


@pytest.mark.parametrize(
    "key", ["cluster.up_script", "cluster.down_script", "vips[1].up_script", "vips[2].down_script"]
)
def test_scripts_must_be_non_empty_strings(tmp_path: Path, key: str) -> None:
    def change(d: dict[str, Any]) -> None:
        where, name = key.split(".")
        table = d["cluster"] if where == "cluster" else d["vips"][int(where[5])]
        table[name] = ""

    p = bad(tmp_path, change)
    assert problem(p, key) == "'' is not a non-empty string"


# --- multicast groups ----------------------------------------------------------------------------

GROUP_ALLOWED = "is not a multicast group (224.0.0.0/4"


@pytest.mark.parametrize("group", ["224.0.0.300", "10.0.0.1", "239.1.1.1/32", "", 18])
def test_multicast_bad(tmp_path: Path, group: Any) -> None:
    p = bad(tmp_path, lambda d: d["cluster"].update(multicast=group))
    assert problem(p, "cluster.multicast").startswith(f"{group!r} {GROUP_ALLOWED}")


def test_vip_group_bad(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["vips"][2].update(group="203.0.113.1"))
    assert problem(p, "vips[2].group") == "'203.0.113.1' is not a multicast group (224.0.0.0/4)"


# --- all together --------------------------------------------------------------------------------


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["cluster"].update(advbase=300, dead_ratio=0, multicast="10.1.1.1", colour="red")
        d["cluster"]["password"] = "x" * 25
        d["hosts"][0]["weight"] = -2
        d["hosts"][1]["engine"] = "vrrp"
        d["hosts"][2]["name"] = "alpha"
        d["vips"][0]["address"] = "203.0.113.300/24"
        d["vips"][1]["owner"] = "zulu"
        d["vips"][2]["pool"] = "203.0.113.29-203.0.113.20/24"
        d["vips"][3]["vhid"] = 0
        d["vips"].append({"address": "198.51.100.1/24"})

    p = bad(tmp_path, change)
    keys = [ln[len(f"{p}: ") :].split(": ", 1)[0] for ln in problems(p)]
    assert sorted(keys) == sorted(
        [
            "cluster.colour",
            "cluster.advbase",
            "cluster.dead_ratio",
            "cluster.multicast",
            "cluster.password",
            "hosts[0].weight",
            "hosts[1].engine",
            "hosts[2].name",
            "vips[0].address",
            "vips[1].owner",
            "vips[2].pool",
            "vips[3].vhid",
            "vips[4]",
        ]
    )


# --- good files ----------------------------------------------------------------------------------


def test_example_loads_into_the_expected_model(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "cluster.toml", tmp_path / "cluster.toml")
    (tmp_path / "secret").write_text("s3cret-pass\n")  # as the README says
    (tmp_path / "secret").chmod(0o600)
    path = tmp_path / "cluster.toml"
    c = load_cluster(path)

    def h(name: str, octet: int, engine: str = "iprotate") -> Host:
        return Host(name, IPv4Address(f"198.51.100.{octet}"), "eth1", "eth1", 1.0, engine, True)  # type: ignore[arg-type]

    assert c == Cluster(
        path=str(path),
        password=b"s3cret-pass",
        advbase=1,
        dead_ratio=3,
        backups=3,
        hosts=(h("alpha", 1), h("bravo", 2), h("charlie", 3, "ucarp")),
        vips=tuple(
            Vip(IPv4Interface(f"203.0.113.{10 + j}/24"), f"vips[0].pool[{j}]", DEFAULT_GROUP)
            for j in range(9)
        ),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.advbase = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hosts[0].weight = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.vips[0].owner = "alpha"  # type: ignore[misc]
    assert [v.owner for v in make_plan(c).vips].count("alpha") == 3


def test_every_key_loads(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"letmein\nignored\n")
    (tmp_path / "secret").chmod(0o600)
    data = {
        "cluster": {
            "interface": "eth1",
            "vip_interface": "eth2",
            "password_file": "secret",
            "advbase": 2,
            "dead_ratio": 4,
            "multicast": "224.0.0.19",
            "backups": 1,
            "preempt": False,
            "up_script": "/etc/iprotate/up",
            "down_script": "/etc/iprotate/down",
        },
        "hosts": [
            {"name": "a-1", "address": "198.51.100.1", "weight": 2, "preempt": True},
            {"name": "b.2", "address": "198.51.100.2", "interface": "bond0", "weight": 0.5},
            {"name": "C_3", "address": "198.51.100.3", "vip_interface": "eth3", "engine": "ucarp"},
        ],
        "vips": [
            {"address": "203.0.113.10/24", "vhid": 7, "owner": "C_3", "up_script": "/bin/up"},
            {"pool": "203.0.113.20-203.0.113.21/28", "group": "239.0.0.1", "down_script": "/x"},
        ],
    }
    path = write(tmp_path, data)
    c = load_cluster(path)
    g = IPv4Address("224.0.0.19")
    assert c == Cluster(
        path=str(path),
        password=b"letmein",
        advbase=2,
        dead_ratio=4,
        backups=1,
        hosts=(
            Host("a-1", IPv4Address("198.51.100.1"), "eth1", "eth2", 2.0, "iprotate", True),
            Host("b.2", IPv4Address("198.51.100.2"), "bond0", "eth2", 0.5, "iprotate", False),
            Host("C_3", IPv4Address("198.51.100.3"), "eth1", "eth3", 1.0, "ucarp", False),
        ),
        vips=(
            Vip(IPv4Interface("203.0.113.10/24"), "vips[0]", g, 7, "C_3", "/bin/up", None),
            Vip(
                IPv4Interface("203.0.113.20/28"),
                "vips[1].pool[0]",
                IPv4Address("239.0.0.1"),
                down_script="/x",
            ),
            Vip(
                IPv4Interface("203.0.113.21/28"),
                "vips[1].pool[1]",
                IPv4Address("239.0.0.1"),
                down_script="/x",
            ),
        ),
        up_script="/etc/iprotate/up",
        down_script="/etc/iprotate/down",
    )
    assert c.host("b.2").interface == "bond0"
    assert c.host_names == ("a-1", "b.2", "C_3")


def test_parsing_does_not_change_its_input() -> None:
    data = base()
    before = copy.deepcopy(data)
    parse_cluster(data, "test.toml")
    assert data == before


def test_a_broken_host_does_not_make_its_pins_errors_too(tmp_path: Path) -> None:
    p = bad(tmp_path, lambda d: d["hosts"][0].update(address="nowhere"))
    assert [ln.split(": ")[1] for ln in problems(p)] == ["hosts[0].address"]


def test_inline_password_in_a_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "cluster.toml"
    p.write_text(
        '[cluster]\ninterface = "eth1"\npassword = "pw"\n'
        '[[hosts]]\nname = "a"\naddress = "198.51.100.1"\n'
        '[[vips]]\naddress = "203.0.113.10/24"\n'
    )
    p.chmod(0o644)
    assert any("readable by others" in w for w in load_cluster(p).warnings)
    p.chmod(0o600)
    assert load_cluster(p).warnings == ()


@pytest.mark.parametrize(
    ("run", "key"),
    [
        ({"hold_down": -1}, "run.hold_down"),
        ({"stagger": "fast"}, "run.stagger"),
        ({"garp_refresh": True}, "run.garp_refresh"),
        ({"metrics": 9650}, "run.metrics"),
        ({"holddown": 3}, "run.holddown"),
        ({"ignore_ifstate": "yes"}, "run.ignore_ifstate"),
    ],
)
def test_run_table_errors(run: dict[str, Any], key: str) -> None:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
        "run": run,
    }
    with pytest.raises(ClusterError) as e:
        parse_cluster(doc, "t.toml")
    assert any(p.startswith(f"{key}:") for p in e.value.problems), e.value.problems


def test_run_table_defaults_and_values() -> None:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
    }
    assert parse_cluster(doc, "t.toml").run.hold_down == 3.0
    doc["run"] = {"hold_down": 0, "metrics": "127.0.0.1:9650", "control_group": "root"}
    run = parse_cluster(doc, "t.toml").run
    assert (run.hold_down, run.metrics, run.control_group) == (0.0, "127.0.0.1:9650", "root")
    assert run.ignore_ifstate is False
    doc["run"] = {"ignore_ifstate": True}
    assert parse_cluster(doc, "t.toml").run.ignore_ifstate is True


def test_a_pool_of_host_addresses() -> None:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"pool": "203.0.113.0-203.0.113.255/32", "group": "224.0.0.19", "vhid": 1}],
    }
    with pytest.raises(ClusterError):  # vhid 1 + 256 addresses runs past 255
        parse_cluster(doc, "t.toml")
    doc["vips"] = [{"pool": "203.0.113.1-203.0.113.255/32"}]
    vips = parse_cluster(doc, "t.toml").vips
    assert len(vips) == 255 and str(vips[0].address) == "203.0.113.1/32"


# --- timing values: one set of bounds, in the file and on the command line ----------------------

BAD_SECONDS = [
    ("hold_down", float("nan")),
    ("hold_down", float("inf")),
    ("hold_down", -1.0),
    ("hold_down", 3601),
    ("stagger", float("-inf")),
    ("stagger", 61),
    ("garp_refresh", 0.000001),  # thousands of ARPs a second
    ("garp_refresh", 0.5),
    ("garp_refresh", float("nan")),
    ("hook_timeout", 0),
    ("hook_timeout", float("inf")),
]


@pytest.mark.parametrize(("key", "value"), BAD_SECONDS)
def test_run_timing_out_of_bounds_in_the_file(tmp_path: Path, key: str, value: float) -> None:
    p = bad(tmp_path, lambda d: d.update(run={key: value}))
    message = problem(p, f"run.{key}")
    assert "seconds" in message, message
    # `iprotate run` refuses the file before it touches anything: exit 2, no traceback.
    r = CliRunner().invoke(main, ["run", str(p), "--host", "alpha"])
    assert r.exit_code == 2, r.output
    assert f"run.{key}:" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    ("key", "value"),
    [*((k, v) for k, v in BAD_SECONDS if k != "hook_timeout"), ("hold_down", "soon")],
)
def test_run_timing_out_of_bounds_on_the_command_line(
    tmp_path: Path, key: str, value: float | str
) -> None:
    p = write(tmp_path, base())
    option = "--" + key.replace("_", "-")
    r = CliRunner().invoke(main, ["run", str(p), "--host", "alpha", option, str(value)])
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output and "seconds" in r.output, r.output


@pytest.mark.parametrize(
    ("key", "value"),
    [("hold_down", 0), ("hold_down", 3600), ("stagger", 0), ("stagger", 0.05),
     ("garp_refresh", 0), ("garp_refresh", 1), ("garp_refresh", 86400), ("hook_timeout", 0.1)],
)  # fmt: skip
def test_run_timing_within_bounds(key: str, value: float) -> None:
    doc = base()
    doc["run"] = {key: value}
    assert getattr(parse_cluster(doc, "t.toml").run, key) == value


@given(
    key=st.sampled_from(sorted(RUN_SECONDS)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**30), 10**30),
        st.booleans(),
        st.text(max_size=5),
        st.none(),
    ),
)
def test_run_timing_bounds_fuzzed(key: str, value: Any) -> None:
    """Whatever the value, the check answers (never raises), and what it accepts is a finite
    number within the key's bounds."""
    why = check_seconds(key, value)
    if why is None:
        b = RUN_SECONDS[key]
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert math.isfinite(value)
        assert value == 0 if b.zero_means and value == 0 else b.lo <= value <= b.hi


def test_vips_of_one_group_share_one_group_object(tmp_path: Path) -> None:
    """The engine finds a group's socket address by the group object's identity
    (engine.wire.CarpSocket.send): VIPs of one group, from separate entries, hold one object."""
    data = base()
    data["vips"][0]["group"] = "224.0.0.42"
    data["vips"][1]["group"] = "224.0.0.42"
    data["vips"][3]["group"] = "224.0.0.43"
    c = load_cluster(write(tmp_path, data))
    by_value: dict[Any, set[int]] = {}
    for v in c.vips:
        by_value.setdefault(v.group, set()).add(id(v.group))
    assert {str(g) for g in by_value} == {"224.0.0.18", "224.0.0.42", "224.0.0.43"}
    assert all(len(ids) == 1 for ids in by_value.values())


def test_one_group_object_across_default_explicit_families_and_pools() -> None:
    """The cluster's default group written out again on an entry, an IPv6 group spelled two
    ways, pools of both families: one object per group address, and the plan's VIPs hold it."""
    doc = {
        "cluster": {"interface": "eth1", "password": "pw", "multicast": "224.0.0.42"},
        "hosts": [
            {"name": f"h{i}", "address": f"198.51.100.{i + 1}", "address6": f"2001:db8:1::{i + 1}"}
            for i in range(2)
        ],
        "vips": [
            {"pool": "203.0.113.10-203.0.113.11/24"},
            {"address": "203.0.113.20/24", "group": "224.0.0.42"},
            {"pool": "2001:db8::10-2001:db8::11/64"},
            {"address": "2001:db8::20/64", "group": "FF02::12"},
            {"address": "2001:db8::21/64", "group": "ff02:0::12"},
            {"address": "203.0.113.21/24", "group": "224.0.0.43"},
        ],
    }
    plan = make_plan(parse_cluster(doc, "t.toml"))
    by_value: dict[Any, set[int]] = {}
    for v in plan.vips:
        by_value.setdefault(v.group, set()).add(id(v.group))
    assert {str(g) for g in by_value} == {"224.0.0.42", "224.0.0.43", "ff02::12"}
    assert all(len(ids) == 1 for ids in by_value.values())
