"""contrib/systemd/iprotate-bgp.service: BGP mode's unit verifies, gives BIRD what it needs
(port 179, BFD) and nothing more, and leaves time for the make-before-break stop."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from iprotate.cluster.model import BgpSettings
from tests.test_systemd_unit import INSTALLED, _iprotate_binary, _need, one, parse_unit, words

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "iprotate-bgp.service"


def test_capabilities_and_families() -> None:
    unit = parse_unit(UNIT.read_text())
    caps = {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    assert words(unit, "Service", "CapabilityBoundingSet") == caps
    assert words(unit, "Service", "RestrictAddressFamilies") == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK",
    }  # fmt: skip
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "ExecStart").startswith(f"{INSTALLED} run ")
    assert one(unit, "Service", "ExecStopPost").startswith(f"{INSTALLED} cleanup ")
    # the clean stop waits drain_wait before withdrawing: the unit must not kill it before
    assert float(one(unit, "Service", "TimeoutStopSec")) > BgpSettings(1, ()).drain_wait + 10
    assert one(unit, "Service", "WatchdogSec")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _need(shutil.which("systemd-analyze"), "needs systemd-analyze (Debian's systemd)")
    binary = _need(_iprotate_binary(), "needs the installed iprotate script")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, binary))
    r = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    out = r.stdout + r.stderr
    assert not [line for line in out.splitlines() if UNIT.name in line], out
