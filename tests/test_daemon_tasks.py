"""No background task of the daemon may end silently: a failure stops it cleanly, non-zero."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iprotate.cluster.loader import parse_cluster
from iprotate.engine.daemon import Daemon
from iprotate.plan.planner import make_plan


def _daemon() -> Daemon:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
    }
    return Daemon(make_plan(parse_cluster(doc, "t.toml")), "a")


def test_a_failing_task_is_logged_and_stops_the_daemon(caplog: pytest.LogCaptureFixture) -> None:
    d = _daemon()

    async def boom() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("socket gone")

    async def go() -> None:
        d._background(boom(), "link watcher")
        await asyncio.wait_for(d._stopping.wait(), 1.0)

    with caplog.at_level(logging.ERROR, logger="iprotate"):
        asyncio.run(go())
    assert d._failed is not None and "link watcher failed" in d._failed
    assert "error: link watcher failed: RuntimeError('socket gone')" in caplog.text


def test_a_task_that_ends_or_is_cancelled_is_no_failure() -> None:
    d = _daemon()

    async def go() -> None:
        done = d._background(asyncio.sleep(0), "watchdog")
        slow = d._background(asyncio.sleep(10), "drift reminders")
        await done
        slow.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(go())
    assert d._failed is None and not d._stopping.is_set()
