"""`iprotate status` tells the truth, with the monitoring-plugins exit codes (issue 8, section 4):
0 OK, 1 WARNING (degraded), 2 CRITICAL (a VIP with no master or two), 3 UNKNOWN (nobody answers).
Real daemons in namespaces, the real CLI on the real control socket."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from labtools import settled, wait_for

from iprotate.cli import main
from iprotate.lab.lab import Lab

pytestmark = pytest.mark.netns


def status(lab: Lab, host: str, *more: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["status", "--socket", str(lab.control_socket(host)), *more])
    return r.exit_code, r.output


def status_json(lab: Lab, host: str) -> tuple[int, dict]:
    code, out = status(lab, host, "--json")
    return code, json.loads(out)


def wait_level(lab: Lab, host: str, code: int, timeout: float = 8.0) -> str:
    """The text status once it exits with `code` (fails after `timeout`)."""
    got: list[tuple[int, str]] = []

    def check() -> bool:
        got.append(status(lab, host))
        return got[-1][0] == code

    try:
        wait_for(check, timeout, step=0.2)
    except AssertionError:
        raise AssertionError(f"status never exited {code}: {got[-1]}") from None
    return got[-1][1]


def test_a_stopped_host_and_a_drained_host_are_warnings(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=6)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    code, text = status(lab, "bravo")
    assert code == 0 and text.startswith("IPROTATE OK"), text
    mine = [str(v.address) for v in lab.plan.vips if v.owner == "alpha"]

    # A host drained: its VIPs served by backups, named on every host.
    r = CliRunner().invoke(main, ["drain", "--socket", str(lab.control_socket("alpha"))])
    assert r.exit_code == 0, r.output
    wait_for(settled(lab, {"alpha"}), 5.0)
    text = wait_level(lab, "bravo", 1)
    first = text.splitlines()[0]
    assert first.startswith(f"IPROTATE WARNING - {len(mine)} VIPs not on their owner (alpha)")
    assert all(f"{vip} vhid" in text for vip in mine), text
    code, doc = status_json(lab, "alpha")
    assert code == 1 and doc["level"] == "WARNING"
    assert any(i["kind"] == "drained" and i["level"] == "WARNING" for i in doc["issues"])
    CliRunner().invoke(main, ["undrain", "--socket", str(lab.control_socket("alpha"))])
    wait_for(settled(lab), 8.0)
    wait_level(lab, "bravo", 0)

    # A host stopped: its VIPs on backups, the host not heard.
    lab.stop("alpha")
    wait_for(settled(lab, {"alpha"}), 5.0)
    text = wait_level(lab, "charlie", 1)
    assert "not on their owner (alpha)" in text.splitlines()[0], text
    code, doc = status_json(lab, "charlie")
    kinds = {(i["kind"], i.get("host") or i.get("owner")) for i in doc["issues"]}
    assert ("not_on_owner", "alpha") in kinds
    wait_for(lambda: "not heard: alpha" in status(lab, "charlie")[1].splitlines()[0], 6.0)


def test_every_vip_listed_and_no_master_is_critical(make_lab: Callable[..., Lab]) -> None:
    """4 hosts, 1 backup per VIP: every host lists every VIP of the cluster, also those it takes
    no part in; a VIP whose two hosts are gone has no master: CRITICAL, named."""
    lab = make_lab(hosts=4, vips=8, extra_cluster={"backups": 1})
    lab.start_all()
    wait_for(settled(lab), 8.0)
    code, doc = status_json(lab, "alpha")
    assert code == 0 and doc["level"] == "OK", doc["problems"]
    assert sorted(v["address"] for v in doc["vips"]) == sorted(
        str(v.address) for v in lab.plan.vips
    )
    lost = next(v for v in lab.plan.vips if "alpha" not in v.order)
    assert any(v["address"] == str(lost.address) and v["state"] is None for v in doc["vips"])
    for h in lost.order:
        lab.kill(h)
    text = wait_level(lab, "alpha", 2)
    assert text.startswith("IPROTATE CRITICAL - "), text
    assert f"{lost.address} vhid {lost.vhid}: no master heard" in text


def test_two_hosts_running_different_files_is_a_warning(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=2, run_args=("--hold-down", "0"))
    lab.start("alpha")
    # bravo runs a file with one more VIP (vhid 99): alpha has never heard of it.
    other = lab.workdir / "other.toml"
    other.write_text(
        lab.cluster_file.read_text() + '\n[[vips]]\naddress = "203.0.113.99/24"\nowner = "bravo"\n'
    )
    argv = [sys.executable, "-m", "iprotate", "run", str(other), "--hold-down", "0"]
    argv += ["--control-socket", str(lab.control_socket("bravo"))]
    argv += ["--state-dir", str(lab.workdir / "state")]
    lab.procs["bravo"] = [lab.seg.spawn("bravo", argv, log=str(lab.workdir / "bravo.log"))]
    # (The two plans may also disagree on the other VIPs' priorities: drift, named too.)
    docs: list[tuple[int, dict]] = []

    def judged() -> bool:  # past the start-up time, when silence is judged too
        if not lab.control_socket("alpha").exists():
            return False
        docs.append(status_json(lab, "alpha"))
        return not docs[-1][1]["warming_up"] and "another plan on bravo" in docs[-1][1]["summary"]

    wait_for(judged, 10.0, step=0.2)
    code, doc = docs[-1]
    assert code in (1, 2) and doc["level"] != "OK"
    other_plan = [i for i in doc["issues"] if i["kind"] == "other_plan"]
    assert [(i["level"], i["host"]) for i in other_plan] == [("WARNING", "bravo")]
    assert "host bravo: advertises vhid 99, not in our plan" in other_plan[0]["text"]


def test_nobody_answering_is_unknown(tmp_path: object) -> None:
    r = CliRunner().invoke(main, ["status", "--socket", f"{tmp_path}/nobody.sock"])
    assert r.exit_code == 3
    assert r.stdout.startswith("IPROTATE UNKNOWN")
