"""Health checks in the pure core: the rise/fall counter (carp.health) and what the node does with
a check's state (its VIPs sick or healed, reload), with a fake clock."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from iprotate.carp.health import CheckState, one_line
from iprotate.carp.machine import State
from iprotate.carp.node import Node
from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import Check
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

CHECK = Check(name="web", kind="tcp", target="127.0.0.1:80", vips=(IPv4Address("203.0.113.10"),))


def plan(checks: list[dict[str, Any]]) -> Plan:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": f"h{i}", "address": f"198.51.100.{i + 1}"} for i in range(3)],
        "vips": [{"pool": "203.0.113.10-203.0.113.15/24"}],
        "checks": checks,
    }
    return make_plan(parse_cluster(doc, "t.toml"))


def settle(node: Node, until: float) -> None:
    while node.deadline is not None and node.deadline <= until:
        node.timers(node.deadline)


def test_fall_and_rise_count_consecutive_results() -> None:
    st_ = CheckState(dataclasses.replace(CHECK, fall=2, rise=3), state="up")
    assert st_.result(1.0, False, "connect refused") is None
    assert st_.result(2.0, True, "") is None  # a pass between breaks the streak
    assert st_.result(3.0, False, "connect refused") is None
    ch = st_.result(4.0, False, "connect refused")
    assert (
        ch is not None
        and ch.line("alpha") == "check web on alpha: up -> down: connect refused (2/2)"
    )
    assert (st_.state, st_.since) == ("down", 4.0)
    assert st_.result(5.0, True, "ok") is None
    assert st_.result(6.0, True, "ok") is None
    ch = st_.result(7.0, True, "HTTP 200")
    assert ch is not None and ch.line("alpha") == "check web on alpha: down -> up: HTTP 200 (3/3)"


def test_unknown_is_up_at_the_first_pass_and_down_after_fall_failures() -> None:
    st_ = CheckState(dataclasses.replace(CHECK, fall=2, rise=3))
    assert st_.result(1.0, False, "x") is None
    ch = st_.result(2.0, False, "x")
    assert ch is not None and (ch.old, ch.new, ch.count, ch.needed) == ("unknown", "down", 2, 2)
    st_ = CheckState(dataclasses.replace(CHECK, fall=2, rise=3))
    assert st_.result(1.0, False, "x") is None
    ch = st_.result(2.0, True, "ok")
    assert ch is not None and (ch.old, ch.new, ch.count, ch.needed) == ("unknown", "up", 1, 1)


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 5), st.integers(1, 5))
def test_the_state_is_the_last_streak_long_enough(
    results: list[bool], fall: int, rise: int
) -> None:
    st_ = CheckState(dataclasses.replace(CHECK, fall=fall, rise=rise), state="up")
    for i, ok in enumerate(results):
        st_.result(float(i), ok, "")
        # Down exactly when, looking back, `fall` failures came after the last `rise` passes.
    expect = "up"
    streak_ok = streak_bad = 0
    for ok in results:
        streak_ok, streak_bad = (streak_ok + 1, 0) if ok else (0, streak_bad + 1)
        if expect == "up" and streak_bad >= fall:
            expect, streak_bad = "down", 0
        elif expect == "down" and streak_ok >= rise:
            expect, streak_ok = "up", 0
    assert st_.state == expect


def test_one_line_keeps_the_last_printable_line_bounded() -> None:
    assert one_line("a\nb\n\n") == "b"
    assert one_line("") == "no output"
    assert one_line("\x1b[31mred") == "?[31mred"
    assert len(one_line("x" * 10_000)) == 200


def test_node_checks_start_unknown_and_their_vips_stand_aside() -> None:
    p = plan([{"name": "web", "tcp": "127.0.0.1:80", "vips": ["203.0.113.10-203.0.113.12/24"]}])
    node = Node.build(p, "h0", hold_down=1.0, stagger=0.5)
    node.start(0.0)
    sick = {IPv4Address(f"203.0.113.1{i}") for i in range(3)}
    assert node.sick_vips() == sick
    assert {m.cfg.vip for m in node.machines.values() if m.sick} == sick & {
        m.cfg.vip for m in node.machines.values()
    }
    change, _effects = node.check_result(1.1, "web", True, "connected")
    assert change is not None and (change.old, change.new) == ("unknown", "up")
    assert not any(m.sick for m in node.machines.values())
    # Healed: each preempts after the hold-down, staggered.
    afters = sorted(m.preempt_after for m in node.machines.values() if m.cfg.vip in sick)
    assert afters and afters[0] >= 1.1 + 1.0
    assert node.check_result(2.0, "nope", False, "") == (None, [])


def test_node_check_down_hands_over_and_up_takes_back() -> None:
    p = plan([{"name": "web", "tcp": "127.0.0.1:80", "fall": 1, "rise": 1}])
    node = Node.build(p, "h0")
    node.check_result(0.0, "web", True, "")
    node.start(0.0)
    settle(node, 20.0)
    assert all(m.state is State.MASTER for m in node.machines.values())
    change, effects = node.check_result(20.0, "web", False, "connect refused")
    assert change is not None and change.new == "down"
    # Make-before-break: farewells go out, the addresses stay until a taker answers.
    assert all(m.state is State.MASTER and m.sick for m in node.machines.values())
    assert effects


def test_reload_keeps_states_adds_new_checks_up_and_drops_removed_ones() -> None:
    a = {"name": "a", "tcp": "127.0.0.1:80"}
    b = {"name": "b", "tcp": "127.0.0.1:81"}
    node = Node.build(plan([a]), "h0")
    node.start(0.0)
    node.check_result(0.0, "a", False, "")
    node.check_result(1.0, "a", False, "refused")
    assert node.health["a"].state == "down" and node.sick_vips()
    node.reload(plan([{**a, "interval": 2.0, "timeout": 1.0}, b]), 2.0)
    assert node.health["a"].state == "down" and node.health["a"].check.interval == 2.0
    assert node.health["b"].state == "unknown"  # added while its VIPs were sick: sick until a pass
    node.check_result(2.5, "b", True, "connected")
    node.reload(plan([b]), 3.0)
    assert set(node.health) == {"b"} and not node.sick_vips()
    assert not any(m.sick for m in node.machines.values())


def test_a_check_renamed_while_down_does_not_hand_the_vips_back() -> None:
    """A reload that renames a down check (same service): the VIPs stay sick until the new check
    passes, instead of being taken back after the hold-down and lost again `fall` runs later."""
    web = {"name": "web", "tcp": "127.0.0.1:80"}
    node = Node.build(plan([web]), "h0")
    node.start(0.0)
    node.check_result(0.0, "web", False, "refused")
    node.check_result(1.0, "web", False, "refused")
    assert node.health["web"].state == "down"
    node.reload(plan([{**web, "name": "web2"}]), 2.0)
    assert node.health["web2"].state == "unknown"
    assert all(m.sick for m in node.machines.values())
    settle(node, 100.0)  # long past any hold-down: still not taken back
    assert all(m.sick for m in node.machines.values())
    node.check_result(101.0, "web2", True, "connected")
    assert not any(m.sick for m in node.machines.values())


def test_a_check_added_by_a_reload_on_healthy_vips_starts_up() -> None:
    node = Node.build(plan([]), "h0")
    node.start(0.0)
    node.reload(plan([{"name": "web", "tcp": "127.0.0.1:80"}]), 2.0)
    assert node.health["web"].state == "up"
    assert not any(m.sick for m in node.machines.values())
