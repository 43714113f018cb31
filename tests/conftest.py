"""Shared test helpers: what the namespace and ucarp tests need, and how they refuse to skip in CI.

Tests that need root and network namespaces are marked `netns`; those that run Debian's ucarp are
marked `ucarp`. Outside CI they skip with a reason when the machine cannot run them. With
IPROTATE_REQUIRE_ALL=1 (set by .ci/run) a test that would skip fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iprotate.lab.lab import Lab

UCARP = shutil.which("ucarp") or ("/usr/sbin/ucarp" if Path("/usr/sbin/ucarp").exists() else None)


def _missing(item: pytest.Item) -> str | None:
    if item.get_closest_marker("netns") or item.get_closest_marker("ucarp"):
        if os.geteuid() != 0:
            return "needs root (network namespaces)"
        if shutil.which("ip") is None:
            return "needs iproute2's ip"
    if item.get_closest_marker("ucarp") and UCARP is None:
        return "needs Debian's ucarp"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    why = _missing(item)
    if why is None:
        return
    if os.environ.get("IPROTATE_REQUIRE_ALL") == "1":
        pytest.fail(f"{why}, and IPROTATE_REQUIRE_ALL=1 forbids skipping it", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """Build labs in the test's own directory; every one is removed when the test ends."""
    labs: list[Lab] = []

    def make(**kw: Any) -> Lab:
        lab = Lab(tmp_path / f"lab{len(labs)}", **kw)
        labs.append(lab)
        lab.__enter__()
        return lab

    yield make
    for lab in labs:
        lab.close()
