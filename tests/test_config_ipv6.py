"""IPv6 VIPs in the cluster file (issue 11): the model and every loader check, for IPv6 too.

A file may mix IPv4 and IPv6 VIPs; iprotate hosts that take part in IPv6 VIPs give `address6`;
ucarp hosts never take part in them (ucarp speaks no IPv6).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Interface, ip_address, ip_interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import DEFAULT_GROUP, DEFAULT_GROUP6, ClusterError
from iprotate.plan.planner import make_plan
from tests.test_config import problem, problems, write
from tests.test_fuzz import load_and_plan, mutate, mutation


def dual() -> dict[str, Any]:
    """A valid dual-stack cluster: two iprotate hosts with address6, one ucarp host."""
    return {
        "cluster": {"interface": "eth1", "password": "s3cret-pass"},
        "hosts": [
            {"name": "alpha", "address": "198.51.100.1", "address6": "2001:db8::1"},
            {"name": "bravo", "address": "198.51.100.2", "address6": "fe80::2"},
            {"name": "charlie", "address": "198.51.100.3", "engine": "ucarp"},
        ],
        "vips": [
            {"address": "203.0.113.10/24"},
            {"address": "2001:db8:200::10/64"},
            {"pool": "2001:db8:200::20-2001:db8:200::2f/64"},
            {"address": "2001:db8:300::5/64", "group": "ff02::13", "vhid": 9},
        ],
    }


def bad6(tmp_path: Path, change: Any) -> Path:
    data = dual()
    change(data)
    return write(tmp_path, data)


def test_dual_stack_file_loads(tmp_path: Path) -> None:
    c = make_plan(parse_cluster(dual(), "t.toml")).cluster
    assert c.host("alpha").address6 == IPv6Address("2001:db8::1")
    assert c.host("bravo").address6 == IPv6Address("fe80::2")
    assert c.host("charlie").address6 is None
    assert [h.speaks_ipv6 for h in c.hosts] == [True, True, False]
    v4, v6, *pool, pinned = c.vips
    assert v4.group == DEFAULT_GROUP and v6.group == DEFAULT_GROUP6 == IPv6Address("ff02::12")
    assert v6.address == IPv6Interface("2001:db8:200::10/64")
    assert [str(v.address) for v in pool] == [f"2001:db8:200::{k:x}/64" for k in range(0x20, 0x30)]
    assert [v.source for v in pool][:2] == ["vips[2].pool[0]", "vips[2].pool[1]"]
    assert pinned.group == IPv6Address("ff02::13") and pinned.vhid == 9
    assert c.host("alpha").source_for(v6.address.ip) == IPv6Address("2001:db8::1")
    assert c.host("alpha").source_for(v4.address.ip) == IPv4Address("198.51.100.1")


def test_multicast6(tmp_path: Path) -> None:
    data = dual()
    data["cluster"]["multicast6"] = "ff02::99"
    c = parse_cluster(data, "t.toml")
    assert c.vips[1].group == IPv6Address("ff02::99")
    assert c.vips[0].group == DEFAULT_GROUP  # IPv4 VIPs keep the IPv4 group


@pytest.mark.parametrize(
    "group", ["ff01::12", "ff00::12", "2001:db8::12", "224.0.0.18", "ff02::12%eth1", "x:", 5]
)
def test_multicast6_bad(tmp_path: Path, group: Any) -> None:
    p = bad6(tmp_path, lambda d: d["cluster"].update(multicast6=group))
    assert problem(p, "cluster.multicast6").startswith(f"{group!r} is not an IPv6 multicast group")


def test_vip_group_of_the_other_family(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][1].update(group="224.0.0.19"))
    assert problem(p, "vips[1].group").startswith("'224.0.0.19' is not an IPv6 multicast group")
    p = bad6(tmp_path, lambda d: d["vips"][0].update(group="ff02::12"))
    assert problem(p, "vips[0].group").startswith(
        "'ff02::12' is not a multicast group (224.0.0.0/4"
    )


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("2001:db8::1", "is not an IPv6 interface address"),
        ("2001:db8::1/129", "is not an IPv6 interface address"),
        ("2001:db8::g/64", "is not an IPv6 interface address"),
        ("2001:db8::1%eth1/64", "is not an IPv6 interface address"),
        ("ff02::12/64", "cannot be a virtual address (multicast"),
        ("::1/128", "cannot be a virtual address (multicast, loopback"),
        ("::/64", "cannot be a virtual address"),
        (
            "::ffff:203.0.113.9/120",
            "cannot be a virtual address (multicast, loopback, ::, reserved)",
        ),
        ("fe80::10/64", "cannot be a virtual address (link-local"),
        ("fec0::10/64", "cannot be a virtual address (link-local"),
        ("2001:db8::10/8", "a prefix shorter than /16 is not a subnet to serve"),
        ("2001:db8:200::/64", "is the subnet-router anycast address of 2001:db8:200::/64"),
    ],
)
def test_vip6_address_refused(tmp_path: Path, address: str, why: str) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][1].update(address=address))
    assert why in problem(p, "vips[1].address")


@pytest.mark.parametrize("address", ["2001:db8::/127", "2001:db8::/128", "fd00::7/64"])
def test_vip6_host_prefixes_and_ula_are_fine(tmp_path: Path, address: str) -> None:
    data = dual()
    data["vips"][1].update(address=address, vhid=77)
    assert str(make_plan(parse_cluster(data, "t.toml")).vips[1].address) == address


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("2001:db8::2f-2001:db8::20/64", "the last address must follow the first"),
        (
            "2001:db8::ffff:ffff:ffff:fff0-2001:db8:0:1::5/64",
            "first and last are not in one /64 network",
        ),
        ("2001:db8::20-203.0.113.5/64", "is not a pool"),
        ("203.0.113.20-2001:db8::20/24", "first and last are not of one family"),
        ("2001:db8::0-2001:db8::9/64", "subnet-router anycast"),
        ("2001:db8::1-2001:db8:0:0:0:0:1:1/64", "at most 65536"),
    ],
)
def test_pool6_bad(tmp_path: Path, pool: str, message: str) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][2].update(pool=pool))
    got = problem(p, "vips[2].pool")
    assert got.startswith(repr(pool)) and message in got, got


def test_pool6_of_host_addresses_may_span_networks(tmp_path: Path) -> None:
    data = dual()
    data["vips"][2]["pool"] = "2001:db8::ffff:fffe-2001:db8::1:0:1/128"
    vips = parse_cluster(data, "t.toml").vips
    assert [str(v.address.ip) for v in vips[2:5]] == [
        "2001:db8::ffff:fffe", "2001:db8::ffff:ffff", "2001:db8::1:0:0",
    ]  # fmt: skip


def test_duplicate_vip6_in_any_spelling(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["vips"].append({"address": "2001:DB8:200:0::0010/64"}))
    assert problem(p, "vips[4]") == "2001:db8:200::10 is already vips[1]"
    p = bad6(tmp_path, lambda d: d["vips"].append({"address": "2001:db8:200::25/80"}))
    assert problem(p, "vips[4]") == "2001:db8:200::25 is already vips[2].pool[5]"


def test_vip6_is_a_host_address6(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][1].update(address="2001:db8::1/64"))
    assert problem(p, "vips[1]") == "2001:db8::1 is the address of host 'alpha'"


def test_duplicate_address6(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["hosts"][1].update(address6="2001:db8:0::1"))
    assert problem(p, "hosts[1].address6") == "2001:db8::1 is already the address6 of hosts[0]"


@pytest.mark.parametrize(
    "value",
    [
        "198.51.100.1",
        "2001:db8::1/64",
        "fe80::1%eth1",
        "::",
        "::1",
        "ff02::1",
        "::ffff:198.51.100.1",
        6,
        "",
    ],
)
def test_address6_bad(tmp_path: Path, value: Any) -> None:
    p = bad6(tmp_path, lambda d: d["hosts"][0].update(address6=value))
    got = problem(p, "hosts[0].address6")
    assert got.startswith(repr(value)) and (
        "is not an IPv6 address" in got or "cannot be a host's address" in got
    ), got


def test_iprotate_host_in_ipv6_vips_needs_address6(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["hosts"][1].pop("address6"))
    got = problem(p, "hosts[1].address6")
    assert got.startswith("missing: bravo takes part in the IPv6 VIPs (vips[1] ...)"), got
    # Without IPv6 VIPs no host needs one.
    data = dual()
    del data["hosts"][1]["address6"]
    data["vips"] = data["vips"][:1]
    assert parse_cluster(data, "t.toml").host("bravo").address6 is None


def test_ucarp_host_has_no_address6(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["hosts"][2].update(address6="2001:db8::3"))
    assert "ucarp speaks no IPv6" in problem(p, "hosts[2].address6")


def test_ucarp_host_cannot_own_an_ipv6_vip(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][2].update(owner="charlie"))
    # One problem for the pool entry, not one per member.
    assert problem(p, "vips[2].owner") == (
        "'charlie' runs ucarp, which speaks no IPv6: it cannot own IPv6 VIPs"
    )
    # IPv4 VIPs it may own.
    data = dual()
    data["vips"][0]["owner"] = "charlie"
    assert make_plan(parse_cluster(data, "t.toml")).vips[0].owner == "charlie"


def test_only_ucarp_hosts_and_an_ipv6_vip(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["hosts"] = [d["hosts"][2]]

    p = bad6(tmp_path, change)
    assert "no host can hold IPv6 VIPs" in problem(p, "vips[1]")


def test_vhid_collision_in_an_ipv6_group(tmp_path: Path) -> None:
    # 2001:db8:200::10 derives vhid 0x10 = 16; a pinned 16 in the same group collides.
    p = bad6(tmp_path, lambda d: d["vips"].append({"address": "2001:db8:400::1/64", "vhid": 16}))
    got = problem(p, "vips[4]")
    assert "vhid 16 (pinned) of 2001:db8:400::1 is already used by 2001:db8:200::10" in got
    assert "in group ff02::12" in got
    # The same vhid in the IPv4 group (another group) is fine: 203.0.113.16.
    data = dual()
    data["vips"].append({"address": "203.0.113.16/24"})
    make_plan(parse_cluster(data, "t.toml"))


def test_vhid_cannot_be_derived_from_last_byte_0(tmp_path: Path) -> None:
    p = bad6(tmp_path, lambda d: d["vips"][1].update(address="2001:db8:200::100/64"))
    assert "cannot derive a vhid from 2001:db8:200::100 (last octet 0)" in problem(p, "vips[1]")


def test_more_than_255_ipv6_vips_in_one_group(tmp_path: Path) -> None:
    p = bad6(
        tmp_path,
        lambda d: d["vips"].append(
            {"pool": "2001:db8:500::1-2001:db8:500::100/64", "vhid": 1, "group": "ff02::14"}
        ),
    )
    assert "needs vhids up to 256; at most 255" in problem(p, "vips[4].vhid")

    def many(d: dict[str, Any]) -> None:
        d["vips"] = [d["vips"][0]] + [
            {"pool": f"2001:db8:{k}::1-2001:db8:{k}::40/64", "vhid": 1} for k in range(1, 6)
        ]

    p = bad6(tmp_path, many)
    lines = [ln for ln in problems(p) if "group ff02::12" in ln]
    assert len(lines) == 1 and "would carry 320 VIPs, at most 255 fit" in lines[0]


# --- property: every address the loader accepts is servable, of the entry's family -------------

v6_text = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.sampled_from(
        ["::", "::1", "fe80::1", "ff02::12", "::ffff:1.2.3.4", "fec0::1", "2001:db8::"]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ip=v6_text,
    prefix=st.integers(0, 130),
    group=st.one_of(st.none(), v6_text, st.ip_addresses(v=4).map(str)),
)
def test_vip6_fuzzed(ip: str, prefix: int, group: str | None) -> None:
    """Any IPv6 text as a VIP: loaded only if servable, with a group of its family; otherwise a
    ClusterError that names the entry. Never anything else."""
    data = dual()
    data["vips"] = [data["vips"][0], {"address": f"{ip}/{prefix}", "vhid": 5}]
    if group is not None:
        data["vips"][1]["group"] = group
    try:
        c = parse_cluster(data, "t.toml")
    except ClusterError as e:
        assert all(p.startswith("vips[1]") for p in e.problems), e.problems
        return
    vip = c.vips[1]
    a = ip_interface(f"{ip}/{prefix}")
    assert vip.address == a and a.version == 6
    assert not (a.ip.is_multicast or a.ip.is_loopback or a.ip.is_link_local or a.ip.is_reserved)
    assert 16 <= prefix <= 128 and (prefix > 126 or a.ip != a.network.network_address)
    assert vip.group.version == 6 and vip.group.is_multicast
    assert vip.address.ip not in (ip_address("2001:db8::1"), ip_address("fe80::2"))


@settings(max_examples=200, deadline=None)
@given(
    a6=st.lists(st.one_of(st.none(), st.ip_addresses(v=6).map(str)), min_size=3, max_size=3),
    engines=st.lists(st.sampled_from(["iprotate", "ucarp"]), min_size=3, max_size=3),
)
def test_hosts_fuzzed(a6: list[str | None], engines: list[str]) -> None:
    """Whatever address6 and engines the hosts have: a loaded file has every iprotate host with
    a usable, distinct address6 and no ucarp host with one; a refused one says why, by key."""
    data = dual()
    for h, a, e in zip(data["hosts"], a6, engines, strict=True):
        h.pop("address6", None)
        h["engine"] = e
        if a is not None:
            h["address6"] = a
    try:
        c = parse_cluster(data, "t.toml")
    except ClusterError as e:
        assert all(p.split(":")[0].startswith(("hosts[", "vips[")) for p in e.problems), e.problems
        return
    six = [h.address6 for h in c.hosts if h.engine == "iprotate"]
    assert all(a is not None and not a.is_multicast and not a.is_loopback for a in six)
    assert len(set(six)) == len(six)
    assert all(h.address6 is None for h in c.hosts if h.engine == "ucarp")
    assert any(h.speaks_ipv6 for h in c.hosts)


EXAMPLE6 = Path(__file__).resolve().parent.parent / "examples" / "dual-stack.toml"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_dual_stack_files(tmp_path: Path, ops: list[tuple[str, int, int]]) -> None:
    """Mutated copies of the dual-stack example: a plan or ClusterError, never anything else."""
    (tmp_path / "secret").write_bytes(b"s3cret-pass\n")
    (tmp_path / "secret").chmod(0o600)
    p = tmp_path / "cluster.toml"
    p.write_bytes(mutate(EXAMPLE6.read_bytes(), ops))
    load_and_plan(p)
