"""Chaos in CI: one short seeded run of kills, restarts, clean stops, link flaps and partitions,
VIP link loss, a flap the engine is told to ignore, an interface deleted and re-created, a
netlink storm, a second daemon and SIGUSR2 against a 4-host lab, every invariant checked all
along (tests/chaos_driver.py says which, and how each bound follows from the protocol). The CI
seed is one whose schedule meets every kind of fault (a pure test checks it). bench/chaos.py
runs the long one.

The seed is fixed so CI is repeatable; IPROTATE_CHAOS_SEED (and IPROTATE_CHAOS_SECONDS) override
it, e.g. to replay a failure: the failure message names the seed and the command.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from chaos_driver import (
    BASE_FAULTS,
    EXCLUSIVE,
    FAULTS,
    RECOVERY,
    TRANSIENT,
    ChaosConfig,
    Step,
    make_schedule,
    printer,
    run_chaos,
)

from iprotate.lab.lab import NAMES

CI_SEED = 25
CI_SECONDS = 40.0
HOSTS = list(NAMES[:4])
KINDS = ChaosConfig(seed=0).fault_kinds()  # alpha: VIP NIC; bravo: ignore-ifstate; all native


def _seed() -> int:
    return int(os.environ.get("IPROTATE_CHAOS_SEED", CI_SEED))


def _seconds() -> float:
    return float(os.environ.get("IPROTATE_CHAOS_SECONDS", CI_SECONDS))


# --- the schedule (pure) -------------------------------------------------------------------------


def test_schedule_is_a_function_of_the_seed() -> None:
    a = make_schedule(7, HOSTS, 120, 3)
    assert a == make_schedule(7, HOSTS, 120, 3)
    assert a != make_schedule(8, HOSTS, 120, 3)


def _check(steps: list[Step], max_down: int, kinds: dict[str, tuple[str, ...]]) -> set[str]:
    """The schedule's guarantees; the fault kinds it used."""
    down: dict[str, str] = {}
    used = set()
    for i, s in enumerate(steps):
        assert s.at >= 0
        if s.kind == "quiet":
            assert not {k for k in down.values() if k in TRANSIENT}, "transient at quiet"
            continue
        assert s.host in HOSTS
        if s.kind in FAULTS:
            assert s.kind in kinds[s.host], f"{s.kind} on {s.host}"
            assert s.host not in down, "a fault on a host that is not up"
            if s.kind in EXCLUSIVE:
                assert not down, "a storm or twin while another fault lasts"
                assert steps[i - 1].kind == "quiet", "a storm or twin on an unsettled cluster"
            else:
                assert not {k for k in down.values() if k in EXCLUSIVE}, "during a storm/twin"
            down[s.host] = s.kind
            used.add(s.kind)
            assert len(down) <= max_down
        else:
            fault = down.pop(s.host)
            assert RECOVERY[fault] == s.kind, "recovery of another fault"
            nxt = steps[i + 1]
            if fault == "storm" and (nxt.kind, nxt.host) != ("flap", s.host):
                assert nxt.at == s.at and nxt.kind not in FAULTS, "no flap after a storm"
    assert not down, "every fault recovered by the end"
    assert [s.kind for s in steps[-1:]] == ["quiet"]
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    return used


@pytest.mark.parametrize("seed", range(20))
def test_schedule_keeps_a_host_up_and_recovers_every_fault(seed: int) -> None:
    steps = make_schedule(seed, HOSTS, 300, max_down=3, quiet_every=60, kinds=KINDS)
    assert set(BASE_FAULTS) <= _check(steps, 3, KINDS)


def test_schedules_meet_every_fault() -> None:
    used = set()
    for seed in range(5):
        used |= _check(make_schedule(seed, HOSTS, 300, 3, quiet_every=60, kinds=KINDS), 3, KINDS)
    assert used == set(FAULTS)


def test_schedule_without_kinds_has_the_base_faults_only() -> None:
    steps = make_schedule(3, HOSTS, 300, max_down=3, quiet_every=60)
    assert _check(steps, 3, dict.fromkeys(HOSTS, BASE_FAULTS)) == set(BASE_FAULTS)


def test_fault_kinds_follow_each_hosts_setup() -> None:
    kinds = ChaosConfig(seed=0, legacy=1).fault_kinds()
    assert kinds["delta"] == BASE_FAULTS  # ucarp
    assert "vip_flap" in kinds["alpha"] and "vip_flap" not in kinds["charlie"]
    assert "recreate" not in kinds["bravo"] and "storm" not in kinds["bravo"]  # ignore-ifstate
    assert {"twin", "demote"} <= set(kinds["bravo"])


def test_ci_schedule_has_every_fault() -> None:
    """The CI run meets every kind of fault, and flaps both a host that notices carrier loss
    and one told to ignore it."""
    cfg = ChaosConfig(seed=CI_SEED, seconds=CI_SECONDS)
    steps = make_schedule(
        cfg.seed, cfg.names, cfg.seconds, cfg.down_limit, cfg.mean_gap, cfg.quiet_every,
        kinds=cfg.fault_kinds(),
    )  # fmt: skip
    assert set(FAULTS) == _check(steps, cfg.down_limit, cfg.fault_kinds())
    flapped = {s.host for s in steps if s.kind == "flap"}
    assert flapped & set(cfg.ignoring_hosts) and flapped - set(cfg.ignoring_hosts)


# --- the run (namespaces) ------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_chaos_short_run() -> None:
    cfg = ChaosConfig(seed=_seed(), seconds=_seconds(), quiet_every=20.0)
    printer(f"chaos seed {cfg.seed} ({cfg.seconds:g} s); IPROTATE_CHAOS_SEED=N to change it")
    # Not tmp_path: pytest prunes old base directories, and the daemons' logs of a failed run must
    # outlive other test sessions on the machine. Removed when the run passes.
    workdir = Path(tempfile.mkdtemp(prefix=f"iprotate-chaos-{cfg.seed}-"))
    result = run_chaos(cfg, workdir, printer)
    printer(json.dumps(result.summary(), indent=1))
    assert not result.namespaces_left, f"namespaces left behind: {result.namespaces_left}"
    if result.violations:
        pytest.fail(result.failure_message(), pytrace=False)
    # The run did what it was meant to: every kind of fault, and quiet checks that settled.
    events = result.summary()["events"]
    assert all(events.get(k, 0) >= 1 for k in FAULTS), events
    assert events.get("flap (ignore-ifstate)", 0) >= 1, events
    assert len(result.quiets) >= 3
    assert all(q.settled_after is not None for q in result.quiets)
    # ... and an attacker replayed and rewrote adverts all along, each way it can (issue 9).
    assert result.attacks and all(n >= 5 for n in result.attacks.values()), result.attacks
    shutil.rmtree(workdir, ignore_errors=True)
