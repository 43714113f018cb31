"""[[checks]] in the cluster file: every key validated with its key path, VIPs and hosts resolved,
and `iprotate check --host` finding what a host needs on its machine (issue 10)."""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_config import base, problem, problems, write

from iprotate.cli import main
from iprotate.cluster.loader import (
    check_local,
    load_cluster,
    parse_cluster,
    parse_http_url,
    split_host_port,
)
from iprotate.cluster.model import Check, ClusterError
from iprotate.plan.planner import make_plan


def with_checks(*checks: dict[str, Any]) -> dict[str, Any]:
    data = base()
    data["checks"] = list(checks)
    return data


def load(tmp_path: Path, *checks: dict[str, Any]) -> tuple[Check, ...]:
    return load_cluster(write(tmp_path, with_checks(*checks))).checks


def test_no_checks_by_default(tmp_path: Path) -> None:
    assert load_cluster(write(tmp_path, base())).checks == ()


def test_the_issues_example(tmp_path: Path) -> None:
    (c,) = load(
        tmp_path,
        {
            "name": "web",
            "tcp": "127.0.0.1:8080",
            "interval": 1.0,
            "timeout": 0.5,
            "fall": 2,
            "rise": 2,
            "vips": ["203.0.113.10/24"],
            "hosts": ["alpha", "bravo"],
        },
    )
    assert c == Check(
        name="web",
        kind="tcp",
        target="127.0.0.1:8080",
        vips=(IPv4Address("203.0.113.10"),),
        hosts=("alpha", "bravo"),
        source="checks[0]",
    )


def test_defaults_every_vip_and_the_hosts_taking_part(tmp_path: Path) -> None:
    path = write(tmp_path, with_checks({"name": "web", "http": "http://localhost/"}))
    plan = make_plan(load_cluster(path))
    (c,) = plan.cluster.checks
    assert c.vips == tuple(v.address.ip for v in plan.cluster.vips)
    assert (c.interval, c.timeout, c.fall, c.rise, c.hosts) == (1.0, 0.5, 2, 2, None)
    for h in plan.cluster.hosts:
        runs = plan.for_host(h.name) and h.engine == "iprotate"  # ucarp runs no checks
        assert plan.checks_for(h.name) == ((c,) if runs else ())


def test_vips_as_addresses_and_pools(tmp_path: Path) -> None:
    (c,) = load(
        tmp_path,
        {
            "name": "web",
            "exec": ["/bin/true"],
            "vips": ["203.0.113.11", "203.0.113.21-203.0.113.23/24", "203.0.113.11/24"],
        },
    )
    assert c.vips == tuple(
        IPv4Address(a) for a in ("203.0.113.11", *(f"203.0.113.2{i}" for i in (1, 2, 3)))
    )
    assert c.argv == ("/bin/true",) and c.target == "/bin/true"


def test_a_check_runs_only_where_its_vips_are(tmp_path: Path) -> None:
    data = with_checks({"name": "web", "tcp": "127.0.0.1:80", "vips": ["203.0.113.11/24"]})
    data["cluster"]["backups"] = 0
    plan = make_plan(load_cluster(write(tmp_path, data)))
    assert [h for h in plan.cluster.host_names if plan.checks_for(h)] == ["alpha"]


T = {"name": "w", "tcp": "127.0.0.1:1"}
H = {"name": "w", "http": "http://127.0.0.1/"}
V = "not a VIP of this file"


@pytest.mark.parametrize(
    ("check", "key", "message"),
    [
        ({"tcp": "127.0.0.1:80"}, "checks[0].name", "missing"),
        ({"name": "a b", "tcp": "127.0.0.1:80"}, "checks[0].name", "not a check name"),
        ({"name": "w"}, "checks[0]", "exactly one of"),
        ({**T, "exec": ["/bin/true"]}, "checks[0]", "exactly one of"),
        ({"name": "w", "tcp": "127.0.0.1"}, "checks[0].tcp", "not IP:PORT"),
        ({"name": "w", "tcp": "example.com:80"}, "checks[0].tcp", "no names"),
        ({"name": "w", "tcp": "127.0.0.1:0"}, "checks[0].tcp", "not IP:PORT"),
        ({"name": "w", "tcp": "127.0.0.1:65536"}, "checks[0].tcp", "not IP:PORT"),
        ({"name": "w", "tcp": "::1:80"}, "checks[0].tcp", "not IP:PORT"),
        ({"name": "w", "tcp": 80}, "checks[0].tcp", "not a string"),
        ({"name": "w", "http": "https://127.0.0.1/"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "http": "http://example.com/"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "http": "http://127.0.0.1:99999/"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "http": "http://u:p@127.0.0.1/"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "http": "http://127.0.0.1/a b"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "http": "127.0.0.1"}, "checks[0].http", "http:// URL"),
        ({"name": "w", "exec": []}, "checks[0].exec", "list of 1..64 strings"),
        ({"name": "w", "exec": "/bin/true"}, "checks[0].exec", "list of 1..64 strings"),
        ({"name": "w", "exec": ["/bin/true", 1]}, "checks[0].exec", "list of 1..64 strings"),
        ({"name": "w", "exec": ["true"]}, "checks[0].exec", "absolute path"),
        ({"name": "w", "exec": ["/bin/true"] * 65}, "checks[0].exec", "list of 1..64 strings"),
        ({**T, "expect": 200}, "checks[0].expect", "only an `http`"),
        ({**H, "expect": 99}, "checks[0].expect", "100..599"),
        ({**H, "expect": "200"}, "checks[0].expect", "100..599"),
        ({**T, "user": "nobody"}, "checks[0].user", "only an `exec`"),
        ({"name": "w", "exec": ["/bin/true"], "user": ""}, "checks[0].user", "non-empty"),
        ({**T, "interval": 0.01}, "checks[0].interval", "0.05..3600"),
        ({**T, "interval": float("nan")}, "checks[0].interval", "seconds"),
        ({**T, "interval": True}, "checks[0].interval", "seconds"),
        ({**T, "timeout": 0}, "checks[0].timeout", "0.01..60"),
        ({**T, "timeout": 2}, "checks[0].timeout", "longer than the interval"),
        ({**T, "fall": 0}, "checks[0].fall", "1..100"),
        ({**T, "rise": 101}, "checks[0].rise", "1..100"),
        ({**T, "rise": 1.5}, "checks[0].rise", "1..100"),
        ({**T, "vips": []}, "checks[0].vips", "not a list"),
        ({**T, "vips": "203.0.113.10/24"}, "checks[0].vips", "not a list"),
        ({**T, "vips": ["203.0.113.99/24"]}, "checks[0].vips[0]", V),
        ({**T, "vips": ["203.0.113.10/25"]}, "checks[0].vips[0]", V),
        ({**T, "vips": ["203.0.113.10/24", "x"]}, "checks[0].vips[1]", "not a VIP address or pool"),
        ({**T, "vips": ["203.0.113.28-203.0.113.31/24"]}, "checks[0].vips[0]", ".30/24 is"),
        ({**T, "hosts": ["zulu"]}, "checks[0].hosts", "not a list of hosts"),
        ({**T, "hosts": []}, "checks[0].hosts", "not a list of hosts"),
        ({**T, "hosts": ["alpha", "alpha"]}, "checks[0].hosts", "twice"),
        ({**T, "hosts": ["charlie"]}, "checks[0].hosts", "charlie runs ucarp"),
        ({**T, "retries": 3}, "checks[0].retries", "unknown key"),
    ],
)  # fmt: skip
def test_bad_check(tmp_path: Path, check: dict[str, Any], key: str, message: str) -> None:
    assert message in problem(write(tmp_path, with_checks(check)), key)


def test_checks_not_an_array_of_tables(tmp_path: Path) -> None:
    for raw in ("web", ["web"], {"name": "w"}):
        data = base()
        data["checks"] = raw
        with pytest.raises(ClusterError) as e:
            parse_cluster(data, "f")
        assert any(p.startswith("checks: must be an array") for p in e.value.problems)


def test_duplicate_check_names(tmp_path: Path) -> None:
    c = {"name": "web", "tcp": "127.0.0.1:80"}
    assert "already checks[0]" in problem(write(tmp_path, with_checks(c, c)), "checks[1].name")


def test_too_many_checks(tmp_path: Path) -> None:
    cs = [{"name": f"c{i}", "tcp": "127.0.0.1:80"} for i in range(65)]
    assert "at most 64" in problem(write(tmp_path, with_checks(*cs)), "checks")


def test_every_problem_of_a_check_is_reported(tmp_path: Path) -> None:
    lines = problems(write(tmp_path, with_checks({"name": "w", "tcp": "x", "fall": 0, "rise": 0})))
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("127.0.0.1", 1)),
        ("[::1]:443", ("::1", 443)),
        ("[127.0.0.1]:1", None),
        ("1.2.3.4:", None),
        ("1.2.3.4:+80", None),
        ("1.2.3.4:٨٠", None),
        (":80", None),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int] | None) -> None:
    assert split_host_port(value) == expected


def test_parse_http_url() -> None:
    assert parse_http_url("http://127.0.0.1:8080/health?x=1") == (
        "127.0.0.1",
        8080,
        "127.0.0.1:8080",
        "/health?x=1",
    )
    assert parse_http_url("http://[::1]") == ("::1", 80, "[::1]", "/")
    assert parse_http_url("http://[zz]/") is None


# --- what a host needs on its machine ------------------------------------------------------------


def exec_check(tmp_path: Path, program: str, **more: Any) -> Path:
    return write(tmp_path, with_checks({"name": "svc", "exec": [program, "x"], **more}))


def _host_vips(path: Path, host: str) -> frozenset[IPv4Address]:
    plan = make_plan(load_cluster(path))
    return frozenset(v.ip for v in plan.for_host(host))


def test_check_local_program_missing_or_not_executable(tmp_path: Path) -> None:
    missing = exec_check(tmp_path, str(tmp_path / "nope"))
    assert check_local(load_cluster(missing), "alpha", _host_vips(missing, "alpha")) == [
        f"checks[0].exec: {tmp_path / 'nope'}: No such file or directory"
    ]
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o644)
    p = exec_check(tmp_path, str(script))
    assert (
        "not an executable file" in check_local(load_cluster(p), "alpha", _host_vips(p, "alpha"))[0]
    )
    os.chmod(script, 0o755)
    assert check_local(load_cluster(p), "alpha", _host_vips(p, "alpha")) == []
    d = exec_check(tmp_path, str(tmp_path))
    assert (
        "not an executable file" in check_local(load_cluster(d), "alpha", _host_vips(d, "alpha"))[0]
    )


def test_check_local_unknown_user(tmp_path: Path) -> None:
    p = exec_check(tmp_path, "/bin/true", user="no-such-user-here")
    assert check_local(load_cluster(p), "alpha", _host_vips(p, "alpha")) == [
        "checks[0].user: 'no-such-user-here' is not a user on this machine"
    ]


def test_check_local_only_where_the_check_runs(tmp_path: Path) -> None:
    p = exec_check(tmp_path, str(tmp_path / "nope"), hosts=["bravo"])
    assert check_local(load_cluster(p), "alpha", _host_vips(p, "alpha")) == []
    assert check_local(load_cluster(p), "bravo", _host_vips(p, "bravo")) != []


def test_cli_check_host(tmp_path: Path) -> None:
    p = exec_check(tmp_path, str(tmp_path / "nope"))
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["check", "--host", "alpha", str(p)])
    assert r.exit_code == 2
    assert f"error: {p}: checks[0].exec: {tmp_path / 'nope'}: No such file or directory" in r.output
    r = CliRunner().invoke(main, ["check", "--host", "zulu", str(p)])
    assert r.exit_code == 2


# --- properties ----------------------------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=4),
    st.sampled_from(
        [
            "127.0.0.1:80",
            "[::1]:80",
            "http://127.0.0.1/x",
            "203.0.113.10/24",
            "203.0.113.20-203.0.113.22/24",
            "alpha",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(check=st.dictionaries(st.sampled_from(sorted(
    ["name", "tcp", "http", "exec", "expect", "user", "interval", "timeout", "fall", "rise",
     "vips", "hosts", "other"])), _values, max_size=8))  # fmt: skip
def test_any_check_table_loads_or_names_its_problems(check: dict[str, Any]) -> None:
    """Whatever a [[checks]] table holds, the loader returns a check within every bound or raises
    ClusterError whose problems all name a key of checks[0]; it never raises anything else."""
    data = base()
    data["checks"] = [check]
    try:
        cluster = parse_cluster(data, "f")
    except ClusterError as e:
        assert e.problems
        assert all(p.startswith("checks[0]") for p in e.problems), e.problems
        return
    (c,) = cluster.checks
    assert c.kind in ("tcp", "http", "exec")
    assert 0.05 <= c.interval <= 3600 and 0.01 <= c.timeout <= min(60, c.interval)
    assert 1 <= c.fall <= 100 and 1 <= c.rise <= 100
    assert c.vips and set(c.vips) <= {v.address.ip for v in cluster.vips}
    assert c.hosts is None or set(c.hosts) <= set(cluster.host_names)
    if c.kind == "tcp":
        assert split_host_port(c.target) is not None
    elif c.kind == "http":
        assert parse_http_url(c.target) is not None
    else:
        assert c.argv and c.argv[0] == c.target and c.target.startswith("/")


@given(st.text(max_size=40))
def test_split_host_port_never_raises(value: str) -> None:
    r = split_host_port(value)
    assert r is None or 0 < r[1] < 65536


@given(st.text(max_size=60))
def test_parse_http_url_never_raises(value: str) -> None:
    r = parse_http_url(value)
    assert r is None or (0 < r[1] < 65536 and r[3].startswith("/"))


def test_check_summarises_the_checks_and_where_they_run(tmp_path: Path) -> None:
    p = write(
        tmp_path, with_checks({"name": "web", "http": "http://127.0.0.1/", "hosts": ["alpha"]})
    )
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code == 0
    line = next(ln for ln in r.output.splitlines() if ln.startswith("web "))
    assert "http://127.0.0.1/" in line and line.endswith("alpha")
    p.chmod(0o600)  # no warning on stderr
    r = CliRunner().invoke(main, ["check", "--json", str(p)])
    (c,) = __import__("json").loads(r.output)["checks"]
    assert c["hosts"] == ["alpha"] and c["http"] == "http://127.0.0.1/"


def test_parse_http_url_port_0_and_a_non_ascii_path() -> None:
    """Port 0 became port 80 (`u.port or 80`): the check probed another service than written.
    A non-ASCII path went out with '?' for each character (a query); now percent-encoded."""
    assert parse_http_url("http://127.0.0.1:0/") is None
    assert parse_http_url("http://127.0.0.1/sant\u00e9?q=\u00e9") == (
        "127.0.0.1",
        80,
        "127.0.0.1",
        "/sant%C3%A9?q=%C3%A9",
    )
    assert parse_http_url("http://127.0.0.1/a%20b?x=1&y=[2]") == (
        "127.0.0.1",
        80,
        "127.0.0.1",
        "/a%20b?x=1&y=[2]",
    )
