"""Fuzzing with hypothesis: random and mutated inputs get the documented answer, never a traceback.

- The cluster file: mutated copies of the example and random TOML documents are either loaded and
  planned, or refused with ClusterError (`iprotate check` exits 0 or 2, never 1).
- The receive path: a node fed random bytes, or mutations of a valid signed advert, drops and
  counts what it cannot use and never raises.
(The codec and the state machine have their own property tests in test_codec.py / test_carp.py.)
"""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iprotate.carp import codec
from iprotate.carp.native_auth import derive_key, tag
from iprotate.carp.node import Node
from iprotate.cli import main
from iprotate.cluster.loader import load_cluster, parse_cluster
from iprotate.cluster.model import ClusterError
from iprotate.plan.planner import make_plan

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cluster.toml"
SECRET = b"s3cret-pass\n"  # as the README has the user write it
# tmp_path is shared by the examples of one test: each writes its files anew.
FIXTURES = [HealthCheck.function_scoped_fixture]


def load_and_plan(path: Path) -> None:
    """Either a plan or ClusterError: anything else escapes and fails the test."""
    try:
        make_plan(load_cluster(path))
    except ClusterError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("drop_line"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("dup_line"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    for op, at, arg in ops:
        if not data:
            break
        i = at % len(data)
        lines = data.split(b"\n")
        j = at % len(lines)
        if op == "flip":
            data = data[:i] + bytes([data[i] ^ arg]) + data[i + 1 :]
        elif op == "drop_line":
            data = b"\n".join(lines[:j] + lines[j + 1 :])
        elif op == "dup_line":
            data = b"\n".join(lines[: j + 1] + lines[j:])
        elif op == "truncate":
            data = data[:i]
        else:
            data = data[:i] + bytes([arg]) + data[i:]
    return data


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_cluster_files(tmp_path: Path, ops: list[tuple[str, int, int]]) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secret").chmod(0o600)
    p = tmp_path / "cluster.toml"
    p.write_bytes(mutate(EXAMPLE.read_bytes(), ops))
    load_and_plan(p)


toml_scalar = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["198.51.100.1", "203.0.113.10/24", "224.0.0.18", "eth1", "alpha", "x/33"]),
)
KEYS = st.sampled_from(["name", "address", "pool", "vhid", "owner", "x"])
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["name", "address", "pool", "vhid", "owner", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
section = st.dictionaries(
    st.sampled_from(
        ["interface", "password", "advbase", "dead_ratio", "multicast", "backups", "name",
         "address", "pool", "vhid", "owner", "group", "weight", "engine", "hold_down", "typo"]
    ),
    toml_value,
    max_size=6,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    doc=st.fixed_dictionaries(
        {},
        optional={
            "cluster": st.one_of(section, toml_scalar),
            "hosts": st.one_of(st.lists(section, max_size=4), section),
            "vips": st.one_of(st.lists(section, max_size=4), toml_scalar),
            "run": st.one_of(section, toml_scalar),
            "extra": toml_value,
        },
    )
)
def test_random_cluster_documents(doc: dict[str, Any]) -> None:
    try:
        make_plan(parse_cluster(doc, "fuzz.toml"))
    except ClusterError as e:
        assert e.problems


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_check_command_exits_0_or_2(tmp_path: Path, ops: list[tuple[str, int, int]]) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secret").chmod(0o600)
    p = tmp_path / "cluster.toml"
    p.write_bytes(mutate(EXAMPLE.read_bytes(), ops))
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code in (0, 2), (r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit)


def _node() -> Node:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["cluster"].pop("password_file")
    doc["cluster"]["password"] = "pw"
    node = Node.build(make_plan(parse_cluster(doc, "t.toml")), "alpha")
    node.start(0.0)
    return node


def _valid_packet(node: Node) -> bytes:
    v = node.plan.vips[0]
    bravo = IPv4Address("198.51.100.2")  # a native host: its counter is sealed as bravo would
    counter = 5 << 32 | tag(derive_key(b"pw"), bravo, v.group, v.vhid, v.ip, 1, 0, 5)
    carp = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=0, counter=counter, vip=v.ip,
                               password=b"pw")  # fmt: skip
    return codec.build_ip_packet(bravo, v.group, carp)


def assert_accounted(node: Node, data: bytes) -> None:
    """Feed `data`; it must be used or dropped and counted (our own adverts are ignored)."""
    before = sum(n for k, n in node.counters.items() if k.startswith(("drop_", "adverts_received")))
    node.packet(1.0, data)
    node.timers(100.0)
    after = sum(n for k, n in node.counters.items() if k.startswith(("drop_", "adverts_received")))
    try:
        own = codec.decode_packet(data).src == node.address
    except codec.DecodeError:
        own = False
    assert after - before == (0 if own else 1), dict(node.counters)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=120))
def test_node_takes_random_bytes(data: bytes) -> None:
    assert_accounted(_node(), data)


@settings(max_examples=500, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 55), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.integers(0, 80))  # fmt: skip
def test_node_takes_mutated_adverts(flips: list[tuple[int, int]], cut: int) -> None:
    node = _node()
    data = bytearray(_valid_packet(node))
    for i, x in flips:
        data[i] ^= x
    assert_accounted(node, bytes(data[:cut]) if cut < 56 else bytes(data))
