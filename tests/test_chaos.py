"""Chaos in CI: one short seeded run of kills, restarts, clean stops, link flaps and partitions
against a 4-host lab, every invariant checked all along (tests/chaos_driver.py says which, and
how each bound follows from the protocol). bench/chaos.py runs the long one.

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
    FAULTS,
    RECOVERY,
    ChaosConfig,
    make_schedule,
    printer,
    run_chaos,
)

from iprotate.lab.lab import NAMES

CI_SEED = 20240611
CI_SECONDS = 40.0
HOSTS = list(NAMES[:4])


def _seed() -> int:
    return int(os.environ.get("IPROTATE_CHAOS_SEED", CI_SEED))


def _seconds() -> float:
    return float(os.environ.get("IPROTATE_CHAOS_SECONDS", CI_SECONDS))


# --- the schedule (pure) -------------------------------------------------------------------------


def test_schedule_is_a_function_of_the_seed() -> None:
    a = make_schedule(7, HOSTS, 120, 3)
    assert a == make_schedule(7, HOSTS, 120, 3)
    assert a != make_schedule(8, HOSTS, 120, 3)


@pytest.mark.parametrize("seed", range(20))
def test_schedule_keeps_a_host_up_and_recovers_every_fault(seed: int) -> None:
    steps = make_schedule(seed, HOSTS, 300, max_down=3, quiet_every=60)
    down: dict[str, str] = {}
    kinds = set()
    for s in steps:
        assert s.at >= 0
        if s.kind == "quiet":
            assert not {k for k in down.values() if k in ("flap", "cut")}, "transient at quiet"
            continue
        assert s.host in HOSTS
        kinds.add(s.kind)
        if s.kind in FAULTS:
            assert s.host not in down, "a fault on a host that is not up"
            down[s.host] = s.kind
            assert len(down) <= 3
        else:
            assert RECOVERY[down.pop(s.host)] == s.kind, "recovery of another fault"
    assert not down, "every fault recovered by the end"
    assert [s.kind for s in steps[-1:]] == ["quiet"]
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    assert set(FAULTS) <= kinds


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
    assert len(result.quiets) >= 3
    assert all(q.settled_after is not None for q in result.quiets)
    shutil.rmtree(workdir, ignore_errors=True)
