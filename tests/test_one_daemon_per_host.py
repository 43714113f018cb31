"""One daemon per host, on that host, and a control socket nobody else's: each refusal is one line,
exit 1, and changes nothing; several hosts' daemons on one machine never meet (issue 8, section 2).
Real daemons in namespaces, the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from labtools import settled, wait_for

from iprotate.engine.control import SOCKET_DIR, request
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


# `iprotate ARGS` as user nobody with the group given as the first argument (imported first:
# nobody may not read the interpreter's files).
AS_USER = (
    "import os, sys, collections.abc, json, click, tabulate\n"
    "from iprotate.cli import main\n"
    "os.setgroups([]); os.setgid(int(sys.argv[1])); os.setuid(65534)\n"
    "main(sys.argv[2:], prog_name='iprotate')\n"
)


def iprotate(lab: Lab, member: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m iprotate ARGS` in a member's namespace, to its end."""
    argv = ["ip", "netns", "exec", lab.seg.members[member].netns, sys.executable, "-m", "iprotate"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30)


def run_args(lab: Lab, *more: str) -> list[str]:
    return ["run", str(lab.cluster_file), "--state-dir", str(lab.workdir / "state"), *more]


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_second_daemon_for_a_host_is_refused_and_touches_nothing(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=2, vips=4)
    other = make_lab(hosts=2, vips=4)  # the same host names in other namespaces: no conflict
    lab.start_all()
    other.start_all()
    wait_for(settled(lab), 8.0)
    wait_for(settled(other), 8.0)
    pid = lab.procs["alpha"][0].pid
    before = lab.holders()
    elsewhere = str(lab.workdir / "second.sock")
    for more in (("--host", "alpha", "--control-socket", elsewhere), ("--control-socket", "")):
        r = iprotate(lab, "alpha", *run_args(lab, *more))
        assert r.returncode == 1
        line = one_line(r)
        assert line == f"error: host alpha is already run by pid {pid} in this network namespace"
    assert not Path(elsewhere).exists()
    # However often it is asked (a supervisor restarting a second one in a loop), it names itself.
    ask = (
        "import sys\nfrom iprotate.cluster.loader import load_cluster\n"
        "from iprotate.engine.hostlock import holder_pid\n"
        "host = load_cluster(sys.argv[1]).host('alpha')\n"
        "print(*sorted({holder_pid(host) for _ in range(80)}))\n"
    )
    out = lab.seg.run("alpha", sys.executable, "-c", ask, str(lab.cluster_file))
    assert out.strip() == str(pid)
    # Nor may `cleanup` remove a running daemon's VIPs.
    r = iprotate(lab, "alpha", "cleanup", str(lab.cluster_file))
    assert r.returncode == 1 and one_line(r) == (
        f"error: host alpha is run by pid {pid} in this network namespace: stop it first"
    )
    # The first one kept its VIPs and its control socket.
    assert lab.holders() == before and settled(lab)()
    assert request(str(lab.control_socket("alpha")), {"cmd": "status"})["status"]["host"] == "alpha"
    assert lab.running("alpha")


def test_a_host_whose_address_is_not_here_is_refused(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2)
    for member in ("alpha", CLIENT):
        r = iprotate(lab, member, *run_args(lab, "--host", "bravo", "--control-socket", ""))
        assert r.returncode == 1
        assert one_line(r) == (
            "error: bravo's address 198.51.100.2 is not on this machine: "
            "iprotate run --host must run on that host"
        )
    assert lab.holders() == {str(v.ip): [] for v in lab.plan.vips}


def test_the_control_socket_replaces_only_a_stale_socket(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2)
    lab.start("alpha")
    wait_for(lambda: lab.control_socket("alpha").exists(), 5.0)
    alpha_pid = lab.procs["alpha"][0].pid
    live = str(lab.control_socket("alpha"))
    afile = lab.workdir / "a-file"
    afile.write_text("precious\n")
    adir = lab.workdir / "a-dir"
    adir.mkdir()
    long = str(lab.workdir / ("x" * 120 + ".sock"))
    refused = {
        live: f"control socket {live} is in use by pid {alpha_pid}: refusing to take it",
        str(afile): f"control socket {afile} is a regular file: refusing to replace it",
        str(adir): f"control socket {adir} is a directory: refusing to replace it",
        str(afile / "x.sock"): f"control socket {afile}/x.sock: {afile} is not a directory",
    }
    for path, message in refused.items():
        r = iprotate(lab, "bravo", *run_args(lab, "--control-socket", path))
        assert r.returncode == 1 and one_line(r) == f"error: {message}", r.stderr
    r = iprotate(lab, "bravo", *run_args(lab, "--control-socket", long))
    assert r.returncode == 1 and "too long for a unix socket" in one_line(r)
    assert afile.read_text() == "precious\n" and adir.is_dir()
    assert request(live, {"cmd": "status"})["status"]["host"] == "alpha"
    assert all("bravo" not in h for h in lab.holders().values())  # bravo added nothing
    # A stale socket (its daemon died: nobody accepts on it) is replaced.
    stale = lab.workdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    argv = [sys.executable, "-m", "iprotate", *run_args(lab, "--control-socket", str(stale))]
    lab.procs["bravo"] = [lab.seg.spawn("bravo", argv, log=str(lab.workdir / "bravo.log"))]
    wait_for(lambda: _answers(str(stale)), 5.0)
    assert request(str(stale), {"cmd": "status"})["status"]["host"] == "bravo"
    assert lab.stop("bravo") == [0]
    assert not stale.exists()  # removed on the way out


def _answers(path: str) -> bool:
    try:
        return bool(request(path, {"cmd": "status"}, 1.0)["ok"])
    except Exception:
        return False


def test_clients_find_their_namespace_daemon_on_the_default_sockets(
    make_lab: Callable[..., Lab],
) -> None:
    """With the defaults, each host's daemon has its own socket (/run/iprotate/<host>.sock), and
    `status`, `drain`, `undrain`, `reload` without --socket talk to the daemon of their own
    network namespace."""
    lab = make_lab(hosts=2, vips=4, run_args=("--hold-down", "0"))
    for name in lab.names:
        sock = Path(SOCKET_DIR) / f"{name}.sock"
        if sock.exists():
            pytest.skip(f"{sock} exists: a daemon of this machine uses the default path")
    # A group besides root may use the sockets: its members find their daemon without /proc.
    with lab.cluster_file.open("a") as f:
        f.write('\n[run]\ncontrol_group = "nogroup"\n')
    for name in lab.names:  # no --host, no --control-socket: the defaults
        argv = [sys.executable, "-m", "iprotate", *run_args(lab, "--hold-down", "0")]
        lab.procs[name] = [lab.seg.spawn(name, argv, log=str(lab.workdir / f"{name}.log"))]
    wait_for(settled(lab), 8.0)
    for name in lab.names:
        r = iprotate(lab, name, "status", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["host"] == name
    for gid, code, out in ((65534, 0, '"host": "alpha"'), (12345, 3, "not allowed to use")):
        r = subprocess.run(
            ["ip", "netns", "exec", lab.seg.members["alpha"].netns, sys.executable, "-c", AS_USER,
             str(gid), "status", "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == code and out in r.stdout + r.stderr, r
    # From a namespace with no daemon: UNKNOWN, 3.
    r = iprotate(lab, CLIENT, "status")
    assert r.returncode == 3 and r.stdout.startswith("IPROTATE UNKNOWN"), r
    assert "no iprotate daemon of this network namespace" in r.stderr
    # --host picks that host's default socket, from anywhere.
    r = iprotate(lab, CLIENT, "status", "--json", "--host", "bravo")
    assert r.returncode == 0 and json.loads(r.stdout)["host"] == "bravo"
    mine = [str(v.ip) for v in lab.plan.vips if v.owner == "alpha"]
    r = iprotate(lab, "alpha", "drain")
    assert r.returncode == 0 and all(ip in r.stdout for ip in mine), r
    wait_for(lambda: all(lab.holders()[ip] == ["bravo"] for ip in mine), 5.0)
    assert iprotate(lab, "alpha", "undrain").returncode == 0
    wait_for(settled(lab), 8.0)
    r = iprotate(lab, "bravo", "reload")
    assert r.returncode == 0 and "reloaded" in r.stdout
    for name in lab.names:
        assert lab.stop(name) == [0]
        assert not (Path(SOCKET_DIR) / f"{name}.sock").exists()
    assert os.path.isdir(SOCKET_DIR)
