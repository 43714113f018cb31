"""Smoke tests for the service-failure benchmark (bench/service.py): the keepalived configuration
with its track_script, iprotate's checks, the client's bookkeeping and, in namespaces, one tiny run
of both scenarios under each engine, so the benchmark cannot rot."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from iprotate.lab.lab import Lab

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import service  # noqa: E402


def test_keepalived_conf_tracks_the_service_script_in_every_instance(tmp_path: Path) -> None:
    lab = service.ServiceKeepalivedLab(tmp_path, hosts=3, vips=6)  # not entered: the conf only
    text = lab.conf("alpha")
    assert "enable_script_security" in text and "script_user root" in text
    assert f'script "{service.CHECK} {tmp_path}/alpha.drain {service.PORT}"' in text
    assert (
        text.count("vrrp_instance")
        == text.count("track_script {")
        == len(lab.plan.for_host("alpha"))
    )
    assert text.count("chk_service") == 1 + text.count("track_script {")
    assert "interval 1\n" in text and "fall 2\n" in text and "rise 2\n" in text


def test_keepalived_file_conf_tracks_the_checkers_state_file(tmp_path: Path) -> None:
    lab = service.FileKeepalivedLab(tmp_path, hosts=3, vips=6)
    text = lab.conf("bravo")
    assert f'file "{tmp_path}/bravo.state"' in text and "weight 0" in text
    assert (
        text.count("vrrp_instance") == text.count("track_file {") == len(lab.plan.for_host("bravo"))
    )
    assert "vrrp_script" not in text


def test_iprotate_checks_load_with_one_drain_flag_per_host(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=3, vips=6, extra_toml=service.iprotate_checks(tmp_path, ["alpha",
              "bravo", "charlie"]))  # fmt: skip
    by_name = {k.name: k for k in lab.plan.cluster.checks}
    assert by_name["service"].kind == "tcp" and by_name["service"].interval == 0.2
    assert by_name["service"].fall == 2 and by_name["service"].hosts is None
    drain = by_name["drain-bravo"]
    assert drain.kind == "exec" and drain.hosts == ("bravo",)
    assert drain.argv == (str(service.CHECK), str(tmp_path / "bravo.drain"))


def test_client_lines_and_timeline(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(
        "0 1.00 1.001 1.10 alpha ok\n0 1.01 -1 1.01 - refused\n0 1.02 -1 1.02 - refused\n"
        "0 1.03 1.031 1.13 bravo ok\n0 1.04 1.041 1.14 bravo cut\n1 1.00 1.0"
    )
    c = service.Client(["203.0.113.10", "203.0.113.11"], path)
    c.poll()
    assert [x.outcome for x in c.conns["203.0.113.10"]] == ["ok", "refused", "refused", "ok", "cut"]
    assert c.conns["203.0.113.11"] == []  # half a line: not yet
    assert service.timeline(c.conns["203.0.113.10"], 1.0, 0.0, 2.0) == [
        [0.0, 0.01, "alpha"],
        [0.01, 0.03, "failed"],
        [0.03, 0.05, "bravo"],
    ]


def _tiny(engine: str, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    res = service.run_engine(service.ENGINES[engine], tmp_path / engine, 1, hosts=2, vips=2)
    (run,) = res["runs"]
    assert [s["scenario"] for s in run["scenarios"]] == list(service.SCENARIOS)
    for s in run["scenarios"]:
        assert s["settled"], s["scenario"]
        (moved,) = [v for v in s["vips"].values() if v["moved"]]  # the victim's own VIP
        assert moved["served_next_s"] is not None and moved["opened"] > 0
        assert all(v["failed"] == 0 for v in s["vips"].values() if not v["moved"])
    assert f"| {engine}" in service.markdown(
        {"argv": [], "repeat": 1, "environment": service.environment([]), "results": [res],
         "errors": []}
    )  # fmt: skip
    return res


@pytest.mark.netns
def test_tiny_run_iprotate(tmp_path: Path) -> None:
    res = _tiny("iprotate", tmp_path)
    kill, drain = res["runs"][0]["scenarios"]
    (moved,) = [v for v in kill["vips"].values() if v["moved"]]
    assert moved["failed"] > 0  # a killed service refuses connections until the check fails
    # Taken out before its service stops, make-before-break: nothing is refused and no gap
    # opens (a gap of even 0.1 s fails 10 connections). One connection may open at the very
    # instant of the move and have its handshake split over the two hosts (bench/service.py).
    assert sum(v["failed"] for v in drain["vips"].values()) <= 1
    assert all(set(v["failed_why"]) <= {"timeout"} for v in drain["vips"].values())


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs Debian's keepalived")
def test_tiny_run_keepalived(tmp_path: Path) -> None:
    _tiny("keepalived", tmp_path)


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs Debian's keepalived")
def test_tiny_run_keepalived_file(tmp_path: Path) -> None:
    _tiny("keepalived-file", tmp_path)
