"""The Prometheus exporter: a real Node driven through its events, scraped through the collector
and over HTTP, and the listen-address parser."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from ipaddress import IPv4Address

import prometheus_client
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from iprotate.carp import codec
from iprotate.carp.native_auth import derive_key, tag
from iprotate.carp.node import Node
from iprotate.cluster.loader import parse_cluster
from iprotate.engine import metrics
from iprotate.engine.hooks import HookRunner
from iprotate.plan.model import Plan, VipPlan
from iprotate.plan.planner import make_plan

HOSTS = ("alpha", "bravo", "charlie")
VIPS = ("203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_test_plan() -> Plan:
    data = {
        "cluster": {"interface": "eth1", "password": "x"},
        "hosts": [{"name": n, "address": f"198.51.100.{i}"} for i, n in enumerate(HOSTS, 1)],
        "vips": [{"pool": "203.0.113.10-203.0.113.13/24"}],
    }
    return make_plan(parse_cluster(data, "test.toml"))


def master_node(plan: Plan, host: str = "alpha") -> Node:
    """`host` alone on the segment: started at 0, every VIP's master-down timer expired by 10."""
    node = Node.build(plan, host)
    node.start(0.0)
    node.timers(10.0)
    return node


def scrape(node_fn: metrics.NodeFn, now: float = 12.5) -> Samples:
    registry = metrics.make_registry(node_fn, lambda: now, process=False)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def vip_labels(v: VipPlan, **extra: str) -> frozenset[tuple[str, str]]:
    labels = {"vip": str(v.ip), "vhid": str(v.vhid), "group": str(v.group), **extra}
    return frozenset(labels.items())


def advert_packet(
    v: VipPlan, src: str, advskew: int, password: bytes = b"x", ttl: int = 255, cut: int = 36
) -> bytes:
    """An advert for `v` from iprotate host `src` (its counter sealed); `cut` keeps that many CARP
    bytes."""
    s = IPv4Address(src)
    # Above anything the node under test has sent (its wall clock starts at 0), and within
    # native_auth.MAX_JUMP of it (a seq further ahead is dropped as FUTURE).
    seq = 10**8
    counter = seq << 32 | tag(derive_key(password), s, v.group, v.vhid, v.ip, 1, advskew, seq)
    carp = codec.encode_advert(
        vhid=v.vhid, advbase=1, advskew=advskew, counter=counter, vip=v.ip, password=password
    )
    return codec.build_ip_packet(IPv4Address(src), v.group, carp[:cut], ttl=ttl)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_test_plan()


def test_plan_is_what_the_tests_assume(plan: Plan) -> None:
    assert [str(v.ip) for v in plan.vips] == list(VIPS)
    # Three hosts, two backups each: every host takes part in every VIP.
    assert all(len(v.order) == 3 for v in plan.vips)


def test_vip_state_after_takeover(plan: Plan) -> None:
    node = master_node(plan)
    got = scrape(lambda: node)
    for v in plan.vips:
        for state, want in (("init", 0.0), ("backup", 0.0), ("master", 1.0)):
            assert got[("iprotate_vip_state", vip_labels(v, state=state))] == want
        # INIT -> BACKUP at start, BACKUP -> MASTER when no advert came.
        assert got[("iprotate_vip_transitions_total", vip_labels(v))] == 2.0
        assert got[("iprotate_vip_drained", vip_labels(v))] == 0.0
        assert got[("iprotate_vip_state_seconds", vip_labels(v))] == pytest.approx(2.5)


def test_only_vips_the_host_takes_part_in(plan: Plan) -> None:
    node = master_node(plan)
    del node.machines[(plan.vips[0].group, plan.vips[0].vhid)]
    got = scrape(lambda: node)
    states = {dict(labels)["vip"] for (name, labels) in got if name == "iprotate_vip_state"}
    assert states == set(VIPS[1:])


def test_init_state_has_no_state_seconds(plan: Plan) -> None:
    node = Node.build(plan, "alpha")
    got = scrape(lambda: node)
    v = plan.vips[0]
    assert got[("iprotate_vip_state", vip_labels(v, state="init"))] == 1.0
    assert ("iprotate_vip_state_seconds", vip_labels(v)) not in got


def test_packets_counted_by_reason(plan: Plan) -> None:
    node = master_node(plan)
    v = plan.vips[0]
    good = advert_packet(v, "198.51.100.2", advskew=200)
    node.packet(11.0, advert_packet(v, "198.51.100.2", 200, cut=20))  # malformed
    node.packet(11.0, advert_packet(v, "198.51.100.2", 200, ttl=64))  # crossed a router
    node.packet(11.0, advert_packet(v, "198.51.100.2", 200, password=b"wrong"))
    node.packet(11.0, good)  # valid, less preferred: alpha stays master
    node.counters["adverts_sent"] += 7  # the daemon counts what it sends
    node.counters["errors"] += 1
    got = scrape(lambda: node)

    def dropped(reason: str) -> float:
        return got[("iprotate_packets_dropped_total", frozenset({("reason", reason)}))]

    assert dropped("short") == 1.0
    assert dropped("bad_ttl") == 1.0
    assert dropped("bad_digest") == 1.0
    # Every known reason is there from the start, at 0, so rate() works before the first drop.
    assert dropped("bad_checksum") == 0.0
    assert dropped("replay") == 0.0
    assert got[("iprotate_digest_failures_total", frozenset())] == 1.0
    # short and bad_ttl come from the decoder; the digest is checked after decoding.
    assert got[("iprotate_malformed_packets_total", frozenset())] == 2.0
    assert got[("iprotate_adverts_received_total", frozenset())] == 1.0
    assert got[("iprotate_adverts_sent_total", frozenset())] == 7.0
    assert got[("iprotate_errors_total", frozenset())] == 1.0
    assert got[("iprotate_vip_state", vip_labels(v, state="master"))] == 1.0
    # The node counts a peer failing the digest as drifting; the gauge is however many it holds.
    assert got[("iprotate_drift", frozenset())] == float(len(node.drift)) >= 1


def test_unknown_drop_reason_is_exported(plan: Plan) -> None:
    node = master_node(plan)
    node.counters["drop_something_new"] += 3
    got = scrape(lambda: node)
    assert got[("iprotate_packets_dropped_total", frozenset({("reason", "something_new")}))] == 3


def test_yielding_to_a_better_master(plan: Plan) -> None:
    node = master_node(plan)
    v = plan.vips[0]
    node.packet(11.0, advert_packet(v, "198.51.100.2", advskew=0))
    got = scrape(lambda: node, now=14.0)
    assert got[("iprotate_vip_state", vip_labels(v, state="backup"))] == 1.0
    assert got[("iprotate_vip_state", vip_labels(v, state="master"))] == 0.0
    assert got[("iprotate_vip_transitions_total", vip_labels(v))] == 3.0
    assert got[("iprotate_vip_state_seconds", vip_labels(v))] == pytest.approx(3.0)


def test_drained(plan: Plan) -> None:
    node = master_node(plan)
    node.drain(11.0, only=plan.vips[1].ip)
    got = scrape(lambda: node)
    assert got[("iprotate_vip_drained", vip_labels(plan.vips[1]))] == 1.0
    assert got[("iprotate_vip_drained", vip_labels(plan.vips[0]))] == 0.0


def test_drift_and_takeover_optional(plan: Plan) -> None:
    node = master_node(plan)
    # A node without them (as before the daemon measured takeovers) still scrapes.
    del node.drift
    del node.takeover_seconds
    got = scrape(lambda: node)
    assert got[("iprotate_drift", frozenset())] == 0.0
    assert not [k for k in got if k[0] == "iprotate_last_takeover_seconds"]


def test_drift_and_takeover_present(plan: Plan) -> None:
    node = master_node(plan)
    v0, v1 = plan.vips[0], plan.vips[1]
    src = IPv4Address("198.51.100.3")
    drift = {((v0.group, v0.vhid), src): object(), ((v1.group, v1.vhid), src): object()}
    node.drift = drift  # type: ignore[assignment]
    # Keyed by (group, vhid) or by the address itself: both give the vip label.
    node.takeover_seconds = {(v0.group, v0.vhid): 0.004, v1.ip: 0.25}  # type: ignore[dict-item]
    got = scrape(lambda: node)
    assert got[("iprotate_drift", frozenset())] == 2.0
    takeover = "iprotate_last_takeover_seconds"
    assert got[(takeover, frozenset({("vip", str(v0.ip))}))] == pytest.approx(0.004)
    assert got[(takeover, frozenset({("vip", str(v1.ip))}))] == pytest.approx(0.25)


def test_hooks(plan: Plan) -> None:
    runner = HookRunner()
    runner.succeeded, runner.failures, runner.timeouts = 5, 2, 1
    node = master_node(plan)
    registry = metrics.make_registry(lambda: node, lambda: 0.0, lambda: runner, process=False)
    got = parse(generate_latest(registry).decode())
    for result, n in (("succeeded", 5), ("failed", 2), ("timeout", 1)):
        assert got[("iprotate_hooks_total", frozenset({("result", result)}))] == n
    # Without a runner (no hooks configured) the family has no samples.
    assert not [k for k in scrape(lambda: node) if k[0] == "iprotate_hooks_total"]


def test_node_swapped_by_reload(plan: Plan) -> None:
    nodes = [master_node(plan)]
    registry = metrics.make_registry(lambda: nodes[0], lambda: 12.5, process=False)
    v = plan.vips[0]
    before = parse(generate_latest(registry).decode())
    assert before[("iprotate_vip_state", vip_labels(v, state="master"))] == 1.0
    nodes[0] = Node.build(plan, "alpha")  # fresh, not started: INIT
    after = parse(generate_latest(registry).decode())
    assert after[("iprotate_vip_state", vip_labels(v, state="init"))] == 1.0


def test_no_node_yet() -> None:
    got = scrape(lambda: None)
    assert not [k for k in got if k[0].startswith("iprotate_")]


def test_global_registry_untouched(plan: Plan) -> None:
    node = master_node(plan)
    metrics.make_registry(lambda: node, lambda: 0.0)
    assert b"iprotate_" not in generate_latest(prometheus_client.REGISTRY)


def test_registries_are_independent(plan: Plan) -> None:
    # Two exporters in one process (tests, a reload) must not clash on metric names.
    a = metrics.make_registry(lambda: master_node(plan), lambda: 0.0)
    b = metrics.make_registry(lambda: master_node(plan, "bravo"), lambda: 0.0)
    assert b"iprotate_vip_state" in generate_latest(a)
    assert b"iprotate_vip_state" in generate_latest(b)


def test_http_scrape(plan: Plan) -> None:
    node = master_node(plan)
    server = metrics.serve("127.0.0.1:0", lambda: node, lambda: 12.5)
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            got = parse(r.read().decode())
    finally:
        server.close()
    v = plan.vips[2]
    assert got[("iprotate_vip_state", vip_labels(v, state="master"))] == 1.0
    assert ("process_open_fds", frozenset()) in got
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_http_every_address(plan: Plan) -> None:
    node = master_node(plan)
    with metrics.serve(":0", lambda: node, lambda: 12.5) as server:
        port = server.address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"iprotate_vip_state" in r.read()


def test_port_in_use(plan: Plan) -> None:
    node = master_node(plan)
    with metrics.serve("127.0.0.1:0", lambda: node, lambda: 0.0) as server:
        taken = f"127.0.0.1:{server.address[1]}"
        with pytest.raises(OSError):
            metrics.serve(taken, lambda: node, lambda: 0.0)


@pytest.mark.parametrize(
    ("address", "want"),
    [
        ("127.0.0.1:9650", ("127.0.0.1", 9650)),
        (":9650", ("", 9650)),
        ("[::1]:9650", ("::1", 9650)),
        ("[::]:0", ("::", 0)),
        ("localhost:9650", ("localhost", 9650)),
        ("metrics.example.net:65535", ("metrics.example.net", 65535)),
    ],
)
def test_parse_address(address: str, want: tuple[str, int]) -> None:
    assert metrics.parse_address(address) == want


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("9650", "port is missing"),
        ("127.0.0.1", "port is missing"),
        ("127.0.0.1:", "must be a number"),
        ("127.0.0.1:http", "must be a number"),
        ("127.0.0.1:65536", "0..65535"),
        ("127.0.0.1:-1", "must be a number"),
        ("::1:9650", "in brackets"),
        ("[::1:9650", "bracketed IPv6"),
        ("[127.0.0.1]:9650", "bracketed IPv6"),
        ("[]:9650", "bracketed IPv6"),
        ("bad host:9650", "neither an address nor a host name"),
        ("", "port is missing"),
    ],
)
def test_parse_address_errors(address: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as e:
        metrics.parse_address(address)
    assert repr(address) in str(e.value)


def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kw: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # No real lookup: a resolver that times out would make this test slow, not wrong.
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ValueError, match=r"cannot resolve 'metrics\.example\.net'"):
        metrics.serve("metrics.example.net:0", lambda: None, lambda: 0.0)


def test_ipv6_vips_are_labelled_by_address_and_group() -> None:
    data = {
        "cluster": {"interface": "eth1", "password": "x"},
        "hosts": [
            {"name": n, "address": f"198.51.100.{i}", "address6": f"2001:db8::{i}"}
            for i, n in enumerate(HOSTS, 1)
        ],
        "vips": [{"address": "203.0.113.10/24"}, {"pool": "2001:db8:113::10-2001:db8:113::11/64"}],
    }
    plan = make_plan(parse_cluster(data, "test.toml"))
    node = master_node(plan)
    node.takeover_seconds[(plan.vips[-1].group, plan.vips[-1].vhid)] = 0.001
    got = scrape(lambda: node)
    for v in plan.vips:
        assert got[("iprotate_vip_state", vip_labels(v, state="master"))] == 1.0
    six = [v for v in plan.vips if v.ip.version == 6]
    assert len(six) == 2 and all(str(v.group) == "ff02::12" for v in six)
    last = ("iprotate_last_takeover_seconds", frozenset({("vip", str(six[-1].ip))}))
    assert got[last] == 0.001
