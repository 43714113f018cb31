"""Running it in production, in the lab: status, drain, hold-down, reload, ARP refresh, metrics,
hooks and the control socket, each against real daemons in namespaces."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from click.testing import CliRunner
from labtools import WIRE_TOOL, settled, takeover_bound, wait_for

from iprotate.carp import codec
from iprotate.carp.native_auth import derive_key, tag
from iprotate.cli import main
from iprotate.engine.control import ControlError, request
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def status(lab: Lab, host: str) -> tuple[int, dict]:
    code, out = cli("status", "--json", "--socket", str(lab.control_socket(host)))
    return code, json.loads(out)


def pings(lab: Lab, vips: list[str], seconds: float) -> list[subprocess.Popen[bytes]]:
    """A client pinging each VIP every 10 ms for `seconds` (ping's own summary counts losses)."""
    count = str(int(seconds * 100))
    argv = ["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", count]
    return [lab.seg.spawn(CLIENT, [*argv, v], stdout=subprocess.PIPE) for v in vips]


def lost(procs: list[subprocess.Popen[bytes]]) -> dict[str, int]:
    out = {}
    for p in procs:
        text = p.communicate(timeout=60)[0].decode()
        sent, got = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", text).groups())
        out[text.split("---")[1].split()[0]] = sent - got
    return out


def transitions(lab: Lab, host: str, to: str = "MASTER") -> list[tuple[float, str]]:
    """(time, vip) of every `-> to` line in a daemon's log."""
    out = []
    for line in (lab.workdir / f"{host}.log").read_text().splitlines():
        m = re.match(r"(\S+ \S+) INFO (\S+) vhid \d+: \w+ -> " + to, line)
        if m:
            t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            out.append((t + int(m.group(1)[20:]) / 1000, m.group(2)))
    return out


def test_status_shows_the_whole_cluster_and_drift(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6, extra_cluster={"backups": 1})
    lab.start_all()
    wait_for(settled(lab), 8.0)
    code, doc = status(lab, "alpha")
    assert code == 0, doc["problems"]
    for v in doc["vips"]:
        assert v["master"] == [v["planned"]]
        plan = lab.vip(v["address"])
        assert (v["state"] is None) == ("alpha" not in plan.order)  # watched, not taken part in
    # The text form names every VIP and says all is well.
    code, text = cli("status", "--socket", str(lab.control_socket("alpha")))
    assert code == 0 and "OK" in text and all(str(v.address) in text for v in lab.plan.vips)

    # A peer advertising priorities its plan does not give it is named, and status fails.
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    bravo = IPv4Address(str(lab.plan.cluster.host("bravo").address))
    pw = lab.plan.cluster.password

    def drifting_advert(seq: int) -> str:
        # As bravo would send it with another file: its own priority, sealed with the password.
        counter = seq << 32 | tag(derive_key(pw), bravo, v.group, v.vhid, v.ip, 1, 200, seq)
        carp = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=200, counter=counter,
                                   vip=v.ip, password=pw)  # fmt: skip
        return codec.build_ip_packet(bravo, v.group, carp).hex()

    seq = int(time.time()) + 1000
    lab.seg.run(
        CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group), drifting_advert(seq)
    )
    code, doc = wait_status(lab, "alpha", lambda d: d["drift"])
    assert code == 1  # WARNING: one forged advert is drift, not a second master
    assert any("bravo advertises 1/200" in p for p in doc["problems"]), doc["problems"]
    assert settled(lab)()
    # ... and logged, once, not per advert.
    for k in range(3):
        pkt = drifting_advert(seq + 1 + k)
        lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group), pkt)
    time.sleep(0.3)
    log = (lab.workdir / "alpha.log").read_text()
    assert log.count("drift: 198.51.100.2 bravo advertises 1/200") == 1, log


def wait_status(lab: Lab, host: str, what: Callable[[dict], object]) -> tuple[int, dict]:
    t0 = time.monotonic()
    while True:
        code, doc = status(lab, host)
        if what(doc) or time.monotonic() - t0 > 5:
            return code, doc
        time.sleep(0.1)


def test_drain_and_undrain_lose_no_packet(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6, run_args=("--hold-down", "1", "--stagger", "0.2"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    mine = [str(v.ip) for v in lab.plan.vips if v.owner == "alpha"]
    sock = str(lab.control_socket("alpha"))

    ping = pings(lab, mine, 4.0)
    time.sleep(1.0)
    code, out = cli("drain", "--socket", sock)
    assert code == 0, out
    wait_for(settled(lab, {"alpha"}), 3.0)
    assert lost(ping) == dict.fromkeys(mine, 0)

    ping = pings(lab, mine, 5.0)
    time.sleep(0.5)
    code, out = cli("undrain", "--socket", sock)
    assert code == 0, out
    wait_for(settled(lab), 4.0)
    assert lost(ping) == dict.fromkeys(mine, 0)


def test_drained_host_stays_drained_across_a_restart(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6, run_args=("--hold-down", "0.5"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    code, out = cli("drain", "--vip", str(v.ip), "--socket", str(lab.control_socket("alpha")))
    assert code == 0 and str(v.address) in out
    wait_for(lambda: lab.holders()[str(v.ip)] == [v.order[1]], 3.0)
    assert lab.stop("alpha") == [0]
    lab.start("alpha")
    time.sleep(takeover_bound(lab, "alpha") + 1.0)  # long enough to have taken it back
    assert lab.holders()[str(v.ip)] == [v.order[1]]
    code, doc = status(lab, "alpha")
    assert next(x for x in doc["vips"] if x["address"] == str(v.address))["drained"]
    cli("undrain", "--socket", str(lab.control_socket("alpha")))
    wait_for(settled(lab), 4.0)


def test_hold_down_keeps_a_flapping_host_from_dragging_vips(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6, run_args=("--hold-down", "4", "--stagger", "0.3"))
    lab.start_all()
    wait_for(settled(lab), 12.0)
    mine = sorted(str(v.address) for v in lab.plan.vips if v.owner == "alpha")
    t_start = time.time()
    for _ in range(3):  # cable out long enough for the backups to take over, in for less than 4 s
        lab.seg.link("alpha", False)
        wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 1.0)
        lab.seg.link("alpha", True)
        t_in = time.time()
        time.sleep(2.0)
        assert not [x for x in transitions(lab, "alpha") if x[0] > t_start], "it took VIPs back"
    # The last time the cable stays in: after the hold-down it takes them back, one at a time.
    wait_for(settled(lab), 4.0 + 0.3 * len(mine) + 3.0)
    back = sorted(x for x in transitions(lab, "alpha") if x[0] > t_start)
    assert sorted(v for _, v in back) == mine
    assert back[0][0] >= t_in + 3.5
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(back)]
    assert all(g >= 0.2 for g in gaps), gaps


def test_reload_applies_a_new_plan_and_refuses_a_bad_file(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    old = {str(v.ip): v for v in lab.plan.vips}
    # One VIP goes (.15), one comes (.30), the others stay.
    text = lab.cluster_file.read_text().replace(
        'pool = "203.0.113.10-203.0.113.15/24"',
        'pool = "203.0.113.10-203.0.113.14/24"\n\n[[vips]]\naddress = "203.0.113.30/24"',
    )
    lab.cluster_file.write_text(text)
    from iprotate.cluster.loader import load_cluster
    from iprotate.plan.planner import make_plan

    new_plan = make_plan(load_cluster(lab.cluster_file))
    same = [str(v.ip) for v in new_plan.vips if str(v.ip) in old and
            (old[str(v.ip)].order, old[str(v.ip)].advskew) == (v.order, v.advskew)]  # fmt: skip
    assert same
    ping = pings(lab, same, 3.0)
    t0 = time.time()
    time.sleep(0.5)
    for n in lab.names:
        code, out = cli("reload", "--socket", str(lab.control_socket(n)))
        assert code == 0, out
    lab.plan = new_plan
    wait_for(settled(lab), 6.0)
    assert lost(ping) == dict.fromkeys(same, 0)
    for n in lab.names:  # no transition at all for the unchanged VIPs
        moved = {v.split("/")[0] for t, v in transitions(lab, n, r"\w+") if t > t0}
        assert not moved & set(same), (n, moved)

    lab.cluster_file.write_text("this is not [valid toml")
    code, out = cli("reload", "--socket", str(lab.control_socket("alpha")))
    assert code == 1 and "reload refused" in out
    assert settled(lab)()
    code, doc = status(lab, "alpha")
    assert code == 0, doc["problems"]


def test_periodic_gratuitous_arp(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2, run_args=("--garp-refresh", "1"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    time.sleep(3.0)  # past ucarp's two (on takeover, two intervals later)
    out = lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "garp", "eth0", "-", "3.3")
    seen: dict[str, list[str]] = {}
    for line in out.splitlines():
        _, ip, mac = line.split()
        seen.setdefault(ip, []).append(mac)
    for v in lab.plan.vips:
        macs = seen.get(str(v.ip), [])
        assert len(macs) >= 3, (v.address, seen)
        assert set(macs) == {lab.seg.members[v.owner].mac}


def test_metrics_are_served(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2, run_args=("--metrics", "127.0.0.1:9650"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    url = "http://127.0.0.1:9650/metrics"
    get = f"import urllib.request;print(urllib.request.urlopen({url!r}).read().decode())"
    text = lab.seg.run("alpha", sys.executable, "-c", get)
    for v in lab.plan.vips:
        state = "master" if v.owner == "alpha" else "backup"
        (value,) = [
            line.rsplit(" ", 1)[1]
            for line in text.splitlines()
            if line.startswith("iprotate_vip_state{")
            and f'vip="{v.ip}"' in line
            and f'state="{state}"' in line
        ]
        assert float(value) == 1.0, (v.address, state)
    assert re.search(r"iprotate_adverts_sent_total \d", text)


def test_hooks_run_with_ucarps_arguments_and_a_slow_one_delays_nothing(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    record = tmp_path / "hooks.log"
    script = tmp_path / "hook.sh"
    lab0 = Lab(tmp_path / "probe", hosts=3, vips=6)
    slow = next(str(v.ip) for v in lab0.plan.vips if v.owner == "alpha")
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$(cat /proc/uptime | cut -d" " -f1) $0 $* vhid=$IPROTATE_VHID" >> {record}\n'
        f'[ "$2" = "{slow}" ] && sleep 30\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    hooks = {"up_script": str(script), "down_script": str(script)}
    lab = make_lab(hosts=3, vips=6, extra_cluster=hooks)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    mine = [v for v in lab.plan.vips if v.owner == "alpha"]
    lines = record.read_text().splitlines()
    for v in lab.plan.vips:
        want = ["eth1", str(v.ip), "24", f"vhid={v.vhid}"]  # IPROTATE_VHID as documented
        assert any(line.split()[2:] == want for line in lines), v.address
    # The slow up script of one VIP holds up neither the others nor the adverts.
    lab.stop("alpha")
    wait_for(settled(lab, {"alpha"}), 2.0)
    time.sleep(takeover_bound(lab, "alpha") + 0.5)
    assert settled(lab, {"alpha"})(), "a slow hook let a VIP flap"
    assert len(mine) >= 2


def test_control_socket_refuses_other_users(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    path = str(lab.control_socket("alpha"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    code = (
        "import os,sys,socket\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('refused')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert r.stdout.strip() == "refused", r
    assert request(path, {"cmd": "status"})["ok"]
    with pytest.raises(ControlError):
        request(path, {"cmd": "no-such-command"})
    os.kill(lab.procs["alpha"][0].pid, signal.SIGTERM)


def test_systemd_notify_ready_watchdog_and_stopping(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """The daemon says READY=1 once its sockets are joined, pings the watchdog, says STOPPING=1."""
    lab = make_lab(hosts=2, vips=2)
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
    argv = [sys.executable, "-m", "iprotate", "run", str(lab.cluster_file), "--host", "alpha"]
    argv += ["--control-socket", str(lab.control_socket("alpha"))]
    proc = lab.seg.spawn("alpha", argv, log=str(lab.workdir / "alpha.log"), env=env)
    lab.procs["alpha"] = [proc]
    got: list[str] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0 or not got:
        got.append(sock.recv(4096).decode())
    assert got[0].startswith("READY=1"), got
    assert sum(m == "WATCHDOG=1" for m in got) >= 5  # every 0.2 s for 3 s
    assert lab.stop("alpha") == [0]
    rest = []
    with contextlib.suppress(TimeoutError):
        while True:
            rest.append(sock.recv(4096).decode())
    assert "STOPPING=1" in rest
    sock.close()


def test_the_password_stays_out_of_logs_status_and_command_lines(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=3, legacy=1)
    lab.start_all()
    wait_for(settled(lab), 10.0)
    password = lab.plan.cluster.password.decode()
    lab.kill("alpha")
    wait_for(settled(lab, {"alpha"}), 8.0)
    for n in lab.names:
        for p in lab.procs.get(n, []):
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
            assert password not in cmdline, n
    _, out = cli("status", "--json", "--socket", str(lab.control_socket("bravo")))
    assert password not in out
    os.kill(lab.procs["bravo"][0].pid, signal.SIGUSR1)
    time.sleep(0.3)
    for log in lab.workdir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
