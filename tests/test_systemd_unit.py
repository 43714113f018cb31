"""contrib/systemd/iprotate.service: the keys the daemon relies on, and `systemd-analyze verify`.

systemd-analyze (Debian package `systemd`) verifies the unit offline, without systemd running. The
test skips without it, except under IPROTATE_REQUIRE_ALL=1 (CI), where a skip is a failure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iprotate.engine.control import SOCKET_DIR

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "iprotate.service"
INSTALLED = "/usr/local/bin/iprotate"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value given, in order (systemd keys may repeat; an empty value
    resets a list). Comments and backslash continuations as systemd.syntax(7) has them."""
    unit: Unit = {}
    section: str | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, {})
            continue
        assert section is not None, f"{line!r} outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {line!r}"
        unit[section].setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times: {values}"
    return values[0]


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {w for v in unit[section].get(key, []) for w in v.split()}


def test_sections(unit: Unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}


def test_ordering(unit: Unit) -> None:
    assert "network-online.target" in words(unit, "Unit", "Wants")
    assert "network-online.target" in words(unit, "Unit", "After")
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_service_lifecycle(unit: Unit) -> None:
    s = "Service"
    assert one(unit, s, "Type") == "notify"
    assert one(unit, s, "NotifyAccess") == "main"
    assert one(unit, s, "WatchdogSec") == "10"
    assert one(unit, s, "Restart") == "on-failure"
    assert one(unit, s, "ExecStart") == f"{INSTALLED} run /etc/iprotate/cluster.toml"
    assert one(unit, s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # The same binary and cluster file as ExecStart, and no "-" prefix: a failed cleanup shows.
    assert one(unit, s, "ExecStopPost") == f"{INSTALLED} cleanup /etc/iprotate/cluster.toml"


def test_cli_has_the_commands(unit: Unit) -> None:
    """The subcommands the unit runs exist (`cleanup` lives in iprotate/cli/ops_cmd.py)."""
    from iprotate.cli import main

    commands = set(main.commands)  # type: ignore[attr-defined]
    for key in ("ExecStart", "ExecStopPost"):
        sub = shlex.split(one(unit, "Service", key))[1]
        assert sub in commands, f"{key}= runs `iprotate {sub}`, which does not exist"


def test_only_two_capabilities(unit: Unit) -> None:
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert words(unit, "Service", "CapabilityBoundingSet") == caps
    assert words(unit, "Service", "AmbientCapabilities") == caps


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RuntimeDirectory", "iprotate"),
        ("StateDirectory", "iprotate"),
    ],
)
def test_hardening(unit: Unit, key: str, value: str) -> None:
    assert one(unit, "Service", key) == value


def test_address_families(unit: Unit) -> None:
    (value,) = unit["Service"]["RestrictAddressFamilies"]
    assert not value.startswith("~"), "an allow list, not a deny list"
    families = set(value.split())
    assert {"AF_UNIX", "AF_INET", "AF_NETLINK", "AF_PACKET"} <= families
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}


def test_host_network_kept(unit: Unit) -> None:
    # Each of these would cut the daemon off the host's interfaces or capabilities.
    for key in ("PrivateNetwork", "PrivateUsers", "NetworkNamespacePath", "DynamicUser"):
        assert key not in unit["Service"], key
    assert "User" not in unit["Service"], "root (with two capabilities) reads the 0600 secret"


def test_control_socket_in_runtime_directory(unit: Unit) -> None:
    runtime = Path("/run") / one(unit, "Service", "RuntimeDirectory")
    assert Path(SOCKET_DIR) == runtime


def test_comments_explain(unit: Unit) -> None:
    # Every non-obvious line has a comment right above it (or above its group).
    lines = UNIT.read_text().splitlines()
    for key in ("Type", "NotifyAccess", "ExecStopPost", "WatchdogSec", "CapabilityBoundingSet"):
        i = next(n for n, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[i - 1].startswith("#"), f"{key}= has no comment above it"


# --- systemd-analyze -----------------------------------------------------------------------------


def _iprotate_binary() -> str | None:
    """The installed `iprotate` script: next to this interpreter (a venv's bin, even when it is
    not on PATH, as in CI), else on PATH."""
    beside = Path(sys.executable).parent / "iprotate"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("iprotate")


def _need(tool: str | None, why: str) -> str:
    if tool is None:
        if os.environ.get("IPROTATE_REQUIRE_ALL") == "1":
            pytest.fail(f"{why}, and IPROTATE_REQUIRE_ALL=1 forbids skipping", pytrace=False)
        pytest.skip(why)
    return tool


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _need(shutil.which("systemd-analyze"), "needs systemd-analyze (Debian's systemd)")
    binary = _need(_iprotate_binary(), "needs the installed iprotate script")
    # verify checks that every Exec*= binary exists: point them at the one installed here.
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, binary))
    assert binary in copy.read_text()
    r = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    # On a machine without systemd as PID 1 it may complain about other units; ours must be clean.
    about_us = [line for line in out.splitlines() if UNIT.name in line]
    assert not about_us, f"systemd-analyze verify (exit {r.returncode}):\n{out}"


def test_systemd_analyze_catches_mistakes(tmp_path: Path) -> None:
    """The filter above would hide nothing: a broken copy of the unit is reported."""
    analyze = _need(shutil.which("systemd-analyze"), "needs systemd-analyze (Debian's systemd)")
    copy = tmp_path / UNIT.name
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes")
    copy.write_text(text.replace(INSTALLED, str(tmp_path / "missing")))
    r = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    about_us = [line for line in (r.stdout + r.stderr).splitlines() if UNIT.name in line]
    assert any("ProtectSystem" in line or "protect system" in line for line in about_us)
    assert any("missing" in line for line in about_us)


def test_systemd_analyze_security(tmp_path: Path) -> None:
    """Guards the hardening against regressions: exposure 2.4 ("OK") when written; fail above 3.5
    (systemd-analyze's threshold is on a 0..100 scale)."""
    analyze = _need(shutil.which("systemd-analyze"), "needs systemd-analyze (Debian's systemd)")
    binary = _need(_iprotate_binary(), "needs the installed iprotate script")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, binary))
    r = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=35", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --- the capabilities, for real ------------------------------------------------------------------

CAPS_SCRIPT = """
import socket
from ipaddress import IPv4Address, IPv6Address
from iprotate.engine.garp import GarpSender
from iprotate.engine.unsolicited_na import NaSender
from iprotate.engine.wire import CarpSocket
from iprotate.engine.wire6 import CarpSocket6
idx = socket.if_nametoindex("eth1")
s4 = CarpSocket("eth1", idx, IPv4Address("198.51.100.1"), [IPv4Address("198.51.100.2")])
s4.join(IPv4Address("224.0.0.18"))
s4.send(bytes(36), IPv4Address("224.0.0.18"))
s6 = CarpSocket6("eth1", idx, IPv6Address("2001:db8::1"), [IPv6Address("2001:db8::2")])
s6.join(IPv6Address("ff02::12"))
s6.send(bytes(36), IPv6Address("ff02::12"))
GarpSender("eth1").send(IPv4Address("203.0.113.10"))
NaSender("eth1").send(IPv6Address("2001:db8:113::10"))
print("ok")
"""


@pytest.mark.netns
def test_the_units_two_capabilities_cover_every_socket_of_both_families(unit: Unit) -> None:
    """The raw CARP sockets (IPv4 and IPv6), the AF_PACKET sockets for gratuitous ARP and
    unsolicited NAs, the kernel filters and the forced receive buffers: CAP_NET_RAW and
    CAP_NET_ADMIN are enough, and CAP_NET_RAW is needed (without it the raw sockets fail)."""
    from iprotate.lab.netns import Segment

    caps = sorted(
        c.lower().removeprefix("cap_") for c in words(unit, "Service", "CapabilityBoundingSet")
    )
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)

        def run(keep: list[str]) -> subprocess.CompletedProcess[str]:
            bounding = ",".join(["-all", *(f"+{c}" for c in keep)])
            argv = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--"]
            argv += [sys.executable, "-c", CAPS_SCRIPT]
            ns = seg.members["alpha"].netns
            return subprocess.run(
                ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30
            )

        ok = run(caps)
        assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr
        without = run([c for c in caps if c != "net_raw"])
        assert without.returncode != 0 and "PermissionError" in without.stderr
