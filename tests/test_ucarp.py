"""`iprotate ucarp`: the generated ucarp 1.5.2 lines against the plan, the CLI, and real ucarp."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from iprotate.cli import main
from iprotate.cluster.loader import load_cluster, parse_cluster
from iprotate.cluster.model import DEFAULT_GROUP
from iprotate.export import ucarp
from iprotate.lab.netns import Segment
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

REPO = Path(__file__).resolve().parent.parent
CONTRIB = REPO / "contrib" / "ucarp"
EXAMPLE = REPO / "examples" / "cluster.toml"
UCARP_BIN = "/usr/sbin/ucarp"
DEBIAN_HOOK = "/etc/network/if-up.d/ucarp"
PASSWORD = "pw-Unit-7"

# ucarp 1.5.2 options that take a value, and those that do not (CARP.md, ucarp --help).
VALUE_OPTS = {"-i", "-s", "-v", "-a", "-b", "-k", "-r", "-u", "-d", "-x", "--passfile", "--mcastip"}
FLAG_OPTS = {"-P", "-z", "-B"}


def parse_argv(argv: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """(options with values, flags) of a generated ucarp argv; fails on anything else."""
    assert argv[0] == UCARP_BIN
    values: dict[str, str] = {}
    flags: set[str] = set()
    it = iter(argv[1:])
    for a in it:
        if a in FLAG_OPTS:
            assert a not in flags, f"{a} twice"
            flags.add(a)
        elif a in VALUE_OPTS:
            assert a not in values, f"{a} twice"
            values[a] = next(it)
        else:
            raise AssertionError(f"unexpected argument {a!r} in {argv}")
    return values, flags


CLUSTER: dict[str, Any] = {
    "cluster": {
        "interface": "eth1",
        "password": PASSWORD,
        "advbase": 2,
        "dead_ratio": 4,
        "backups": 2,
    },
    "hosts": [
        {"name": "alpha", "address": "198.51.100.1"},
        {"name": "bravo", "address": "198.51.100.2", "vip_interface": "eth2", "engine": "ucarp"},
        {"name": "charlie", "address": "198.51.100.3", "engine": "ucarp", "preempt": False},
        {"name": "delta", "address": "198.51.100.4", "engine": "ucarp"},
    ],
    "vips": [
        {"pool": "203.0.113.10-203.0.113.17/24"},
        {"address": "203.0.113.40/28", "group": "224.0.0.19", "up_script": "/opt/vip up.sh"},
        {"address": "203.0.113.41/32", "vhid": 200, "down_script": "/opt/down%$.sh"},
    ],
}


def make(data: dict[str, Any] = CLUSTER) -> Plan:
    return make_plan(parse_cluster(data, "test.toml"))


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make()


def write_cluster(tmp_path: Path, body: str, password: str = PASSWORD) -> Path:
    secret = tmp_path / "secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    path = tmp_path / "cluster.toml"
    path.write_text(body)
    return path


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["ucarp", *map(str, args)])


# --- the argv against the plan -------------------------------------------------------------------


def check_against_plan(plan: Plan, opts: ucarp.UcarpOptions) -> int:
    """Every host's instances match the plan, VIP by VIP. Returns how many were checked."""
    checked = 0
    c = plan.cluster
    for h in c.hosts:
        insts = ucarp.instances(plan, h.name, opts)
        assert [i.vip for i in insts] == list(plan.for_host(h.name))
        for inst in insts:
            v = inst.vip
            values, flags = parse_argv(inst.argv)
            assert values["-i"] == h.interface
            assert values["-s"] == str(h.address)
            assert values["-v"] == str(v.vhid)
            assert values["-a"] == str(v.ip)
            assert values["-b"] == str(c.advbase)
            assert values["-k"] == str(v.advskew_of(h.name))
            assert values["-r"] == str(c.dead_ratio)
            assert ("-P" in flags) == v.preempt_of(h.name)
            assert "-z" in flags
            assert "-B" not in flags  # added only by command(..., daemonize=True)
            assert values["--passfile"] == opts.passfile
            if v.group == DEFAULT_GROUP:
                assert "--mcastip" not in values
            else:
                assert values["--mcastip"] == str(v.group)
            # -x: the prefix, and the VIP interface when it is not the advert interface.
            prefix, dev = ucarp.parse_xparam(values["-x"], values["-i"])
            assert prefix == v.address.network.prefixlen
            assert dev == h.vip_interface
            assert ("@" in values["-x"]) == (h.vip_interface != h.interface)
            assert inst.rank == v.rank(h.name)
            assert inst.advskew == v.advskew_of(h.name)
            assert inst.preempt == v.preempt_of(h.name)
            for a in inst.argv:
                assert c.password.decode() not in a
            checked += 1
    return checked


def test_argv_matches_plan_for_every_vip_and_host(plan: Plan) -> None:
    n = check_against_plan(plan, ucarp.UcarpOptions())
    assert n == sum(len(v.order) for v in plan.vips)
    assert n > len(plan.vips)  # backups too


def test_argv_options_cover_every_case(plan: Plan) -> None:
    """The fixture cluster exercises what check_against_plan distinguishes."""
    seen: set[str] = set()
    for h in plan.cluster.hosts:
        for i in ucarp.instances(plan, h.name):
            values, flags = parse_argv(i.argv)
            seen |= flags | set(values)
            seen.add("no-P" if "-P" not in flags else "P")
            seen.add("iface@" if "@" in values["-x"] else "iface=")
    assert {"--mcastip", "P", "no-P", "iface@", "iface="} <= seen


@settings(max_examples=40, deadline=None)
def _host_octets(prefix: int, n: int) -> list[int]:
    """`n` last octets from 100 up that are neither a network nor a broadcast address in a
    /`prefix` (every address is usable in a /31 or /32)."""
    size = 1 << (32 - prefix)
    return [a for a in range(100, 255) if size <= 2 or a % size not in (0, size - 1)][:n]


@given(
    hosts=st.integers(1, 6),
    vips=st.integers(1, 24),
    backups=st.integers(0, 4),
    advbase=st.integers(1, 10),
    dead_ratio=st.integers(1, 10),
    prefix=st.integers(24, 32),
    other_group=st.booleans(),
    no_preempt=st.sets(st.integers(0, 5)),
    vip_if=st.sets(st.integers(0, 5)),
)
def test_argv_matches_plan_property(
    hosts: int,
    vips: int,
    backups: int,
    advbase: int,
    dead_ratio: int,
    prefix: int,
    other_group: bool,
    no_preempt: set[int],
    vip_if: set[int],
) -> None:
    hs: list[dict[str, Any]] = []
    for k in range(hosts):
        h: dict[str, Any] = {"name": f"h{k}", "address": f"198.51.100.{k + 1}"}
        if k in no_preempt:
            h["preempt"] = False
        if k in vip_if:
            h["vip_interface"] = "eth2"
        hs.append(h)
    last = 100 + vips - 1
    data = {
        "cluster": {
            "interface": "eth1",
            "password": "x" * 19,
            "advbase": advbase,
            "dead_ratio": dead_ratio,
            "backups": backups,
            **({"multicast": "224.0.0.99"} if other_group else {}),
        },
        "hosts": hs,
        "vips": [{"pool": f"203.0.113.100-203.0.113.{last}/{prefix}"}]
        if prefix <= 25
        else [{"address": f"203.0.113.{a}/{prefix}"} for a in _host_octets(prefix, vips)],
    }
    p = make(data)
    assert check_against_plan(p, ucarp.UcarpOptions(passfile="/run/pw")) == sum(
        len(v.order) for v in p.vips
    )


def test_scripts_precedence(plan: Plan) -> None:
    opts = ucarp.UcarpOptions(upscript="/u.sh", downscript="/d.sh")
    by_ip = {
        str(i.vip.ip): i
        for h in ("alpha", "bravo", "charlie", "delta")
        for i in ucarp.instances(plan, h, opts)
    }
    assert by_ip["203.0.113.40"].upscript == "/opt/vip up.sh"  # the VIP's own
    assert by_ip["203.0.113.40"].downscript == "/d.sh"  # the option
    assert by_ip["203.0.113.41"].downscript == "/opt/down%$.sh"
    assert by_ip["203.0.113.10"].upscript == "/u.sh"
    defaults = ucarp.instances(plan, "alpha")
    assert {i.upscript for i in defaults} >= {ucarp.DEFAULT_UPSCRIPT}
    data = {**CLUSTER, "cluster": {**CLUSTER["cluster"], "up_script": "/cl-up"}}
    for i in ucarp.instances(make(data), "alpha", opts):
        assert i.upscript == ("/opt/vip up.sh" if str(i.vip.ip) == "203.0.113.40" else "/cl-up")


def test_daemonize_adds_B_only_on_request(plan: Plan) -> None:
    inst = ucarp.instances(plan, "alpha")[0]
    assert ucarp.command(inst, daemonize=False) == inst.argv
    withb = ucarp.command(inst, daemonize=True)
    assert withb[0] == inst.argv[0] and withb[1] == "-B" and withb[2:] == inst.argv[1:]


def test_unknown_host_is_keyerror(plan: Plan) -> None:
    with pytest.raises(KeyError):
        ucarp.instances(plan, "zulu")


# --- xparam ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "iface", "expected"),
    [
        ("24", "eth1", (24, "eth1")),
        ("32", "eth1:10", (32, "eth1")),
        ("24@eth2", "eth1", (24, "eth2")),
        ("24@br@x", "eth1", (24, "br@x")),
        ("0 eth2", "eth1", (0, "eth2")),
    ],
)
def test_parse_xparam(value: str, iface: str, expected: tuple[int, str]) -> None:
    assert ucarp.parse_xparam(value, iface) == expected


@pytest.mark.parametrize("value", ["", "33", "x", "24@", "-1", "240"])
def test_parse_xparam_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        ucarp.parse_xparam(value, "eth1")


# --- renderings -----------------------------------------------------------------------------------


def test_shell_lines_round_trip(plan: Plan) -> None:
    insts = ucarp.instances(plan, "alpha")
    for daemonize in (True, False):
        lines = ucarp.shell_lines(insts, daemonize).splitlines()
        assert [tuple(shlex.split(line)) for line in lines] == [
            ucarp.command(i, daemonize) for i in insts
        ]
        assert PASSWORD not in "\n".join(lines)


def test_systemd_units(plan: Plan) -> None:
    insts = ucarp.instances(plan, "charlie")  # with no -P, a VIP of its own and odd scripts
    assert any(i.mcast for i in insts) and not any(i.preempt for i in insts)
    units = ucarp.systemd_units(insts, "test.toml")
    assert len(units) == len(insts)
    assert len({p for p, _ in units}) == len(units)
    for (path, text), inst in zip(units, insts, strict=True):
        assert path == f"/etc/systemd/system/iprotate-ucarp-{inst.vip.ip}.service"
        assert PASSWORD not in text
        assert "Restart=on-failure" in text
        assert "[Install]" in text and "WantedBy=multi-user.target" in text
        (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
        words = shlex.split(line.removeprefix("ExecStart="))
        # systemd's own escapes: %% and $$ stand for % and $.
        words = [w.replace("%%", "%").replace("$$", "$") for w in words]
        assert tuple(words) == inst.argv  # the same argv, in the foreground (no -B)
    whole = ucarp.systemd_text_all(insts, "test.toml")
    assert whole.count("[Service]") == len(insts)


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("/usr/sbin/ucarp", "/usr/sbin/ucarp"),
        ("24@eth2", "24@eth2"),
        ("/opt/vip up.sh", '"/opt/vip up.sh"'),
        ("/opt/a%b$c", '"/opt/a%%b$$c"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        (";", '";"'),
        ("", '""'),
    ],
)
def test_systemd_quote(arg: str, quoted: str) -> None:
    assert ucarp.systemd_quote(arg) == quoted


def test_systemd_quote_refuses_control_characters() -> None:
    with pytest.raises(ucarp.UcarpError):
        ucarp.systemd_quote("a\nb")


def stanzas(text: str) -> dict[str, dict[str, str]]:
    """iface name -> {option: value} of an ifupdown text."""
    out: dict[str, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("auto "):
            continue
        if s.startswith("iface "):
            _, name, fam, method = s.split()
            assert (fam, method) == ("inet", "manual")
            cur = out.setdefault(name, {})
        else:
            assert cur is not None and line.startswith("    ")
            k, v = s.split(None, 1)
            cur[k] = v
    return out


def test_ifupdown_stanzas() -> None:
    data = {**CLUSTER, "vips": CLUSTER["vips"][:1]}  # default group only
    p = make(data)
    for host in ("alpha", "bravo", "charlie"):
        insts = ucarp.instances(p, host)
        got = stanzas(ucarp.ifupdown(p, insts))
        assert len(got) == len(insts)
        h = p.cluster.host(host)
        for i in insts:
            s = got[f"{h.interface}:{i.vip.vhid}"]
            assert s == {
                "address": str(h.address),
                "ucarp-vid": str(i.vip.vhid),
                "ucarp-vip": str(i.vip.ip),
                "ucarp-password": PASSWORD,  # Debian's hook cannot do otherwise
                "ucarp-advbase": "2",
                "ucarp-advskew": str(i.vip.advskew_of(host)),
                "ucarp-deadratio": "4",
                "ucarp-master": "yes" if i.vip.preempt_of(host) else "no",
                "ucarp-upscript": ucarp.DEFAULT_UPSCRIPT,
                "ucarp-downscript": ucarp.DEFAULT_DOWNSCRIPT,
                "ucarp-xparam": "24@eth2" if host == "bravo" else "24",
            }


def test_ifupdown_refuses_what_the_hook_cannot_do(plan: Plan) -> None:
    insts = ucarp.instances(plan, "alpha")
    assert any(i.mcast for i in insts)
    with pytest.raises(ucarp.UcarpError, match=r"224\.0\.0\.19"):
        ucarp.ifupdown(plan, insts)
    for bad in ("two words", "glob*", "back\\slash"):
        data = {
            **CLUSTER,
            "cluster": {**CLUSTER["cluster"], "password": bad},
            "vips": [{"address": "203.0.113.10/24"}],
        }
        p = make(data)
        with pytest.raises(ucarp.UcarpError, match="password"):
            ucarp.ifupdown(p, ucarp.instances(p, "alpha"))


def test_json_shape(plan: Plan) -> None:
    opts = ucarp.UcarpOptions(passfile="/p", daemonize=False)
    insts = ucarp.instances(plan, "bravo", opts)
    data = json.loads(ucarp.render("json", plan, "bravo", insts, opts))
    assert data["host"] == "bravo" and data["vip_interface"] == "eth2"
    assert [tuple(i["argv"]) for i in data["instances"]] == [i.argv for i in insts]
    assert PASSWORD not in json.dumps(data)


def test_passfile_content() -> None:
    assert ucarp.passfile_content(b"abc") == b"abc\n"
    for bad in (b"", b"a\nb"):
        with pytest.raises(ucarp.UcarpError):
            ucarp.passfile_content(bad)


def test_notes(plan: Plan) -> None:
    def notes(host: str) -> str:
        return "\n".join(ucarp.notes(plan, host, ucarp.instances(plan, host)))

    assert "iprotate run" in notes("alpha")  # engine = "iprotate"
    assert "iprotate run" not in notes("delta")
    assert "gratuitous ARP" in notes("bravo")  # VIPs on eth2, adverts on eth1


# --- the command ----------------------------------------------------------------------------------

EXAMPLE_BODY = """
[cluster]
interface = "eth1"
password_file = "secret"
advbase = 1
dead_ratio = 3

[[hosts]]
name = "alpha"
address = "198.51.100.1"

[[hosts]]
name = "bravo"
address = "198.51.100.2"
engine = "ucarp"

[[hosts]]
name = "charlie"
address = "198.51.100.3"
engine = "ucarp"

[[vips]]
pool = "203.0.113.10-203.0.113.15/24"

[[vips]]
address = "203.0.113.20/24"
group = "224.0.0.20"
"""


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    return write_cluster(tmp_path, EXAMPLE_BODY)


def test_cli_shell(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "charlie")
    assert r.exit_code == 0, r.output
    p = make_plan(load_cluster(cluster_file))
    lines = r.stdout.splitlines()
    assert len(lines) == len(p.for_host("charlie"))
    for line, v in zip(lines, p.for_host("charlie"), strict=True):
        argv = shlex.split(line)
        values, flags = parse_argv(argv)
        assert "-B" in flags
        assert values["-v"] == str(v.vhid) and values["-k"] == str(v.advskew_of("charlie"))
        assert values["--passfile"] == ucarp.DEFAULT_PASSFILE
        assert values["-u"] == ucarp.DEFAULT_UPSCRIPT and values["-d"] == ucarp.DEFAULT_DOWNSCRIPT
        assert ("--mcastip" in values) == (str(v.ip) == "203.0.113.20")
    assert PASSWORD not in r.stdout + r.stderr
    assert "--write-passfile" in r.stderr  # how to make the passfile
    assert "iprotate run" not in r.stderr


def test_cli_options(cluster_file: Path) -> None:
    r = run_cli(
        cluster_file,
        "--host",
        "bravo",
        "--foreground",
        "--passfile",
        "/x/pw",
        "--upscript",
        "/x/up",
        "--downscript",
        "/x/down",
        "--ucarp",
        UCARP_BIN,
    )
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        values, flags = parse_argv(shlex.split(line))
        assert "-B" not in flags
        assert (values["--passfile"], values["-u"], values["-d"]) == ("/x/pw", "/x/up", "/x/down")


def test_cli_json(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "charlie", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["host"] == "charlie" and data["engine"] == "ucarp"
    for inst in data["instances"]:
        values, flags = parse_argv(inst["argv"])
        assert values["-v"] == str(inst["vhid"])
        assert values["-k"] == str(inst["advskew"])
        assert ("-P" in flags) == inst["preempt"]
    assert PASSWORD not in r.stdout
    assert run_cli(cluster_file, "--host", "charlie", "--format", "json").stdout == r.stdout
    bad = run_cli(cluster_file, "--host", "charlie", "--json", "--format", "systemd")
    assert bad.exit_code == 2 and "exclusive" in bad.stderr


def test_cli_systemd(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "charlie", "--format", "systemd")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("[Service]") == r.stdout.count("# /etc/systemd/system/iprotate-ucarp-")
    assert " -B" not in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    assert "systemctl daemon-reload" in r.stderr


def test_cli_ifupdown_carries_password_and_warns(tmp_path: Path) -> None:
    body = EXAMPLE_BODY.replace('group = "224.0.0.20"\n', "")
    path = write_cluster(tmp_path, body)
    r = run_cli(path, "--host", "charlie", "--format", "ifupdown")
    assert r.exit_code == 0, r.output
    got = stanzas(r.stdout)
    assert len(got) == 7
    assert all(s["ucarp-password"] == PASSWORD for s in got.values())
    assert "warning:" in r.stderr and "command line" in r.stderr
    assert PASSWORD not in r.stderr


def test_cli_ifupdown_refuses_other_group(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "charlie", "--format", "ifupdown")
    assert r.exit_code == 2
    assert "224.0.0.20" in r.stderr and "--format systemd" in r.stderr
    assert r.stdout == ""


def test_cli_unknown_host(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "zulu")
    assert r.exit_code == 2
    assert "'zulu' is not a host" in r.stderr and "alpha, bravo, charlie" in r.stderr
    assert r.stdout == ""


def test_cli_host_is_required(cluster_file: Path) -> None:
    r = run_cli(cluster_file)
    assert r.exit_code == 2 and "--host" in r.stderr


def test_cli_bad_file(tmp_path: Path) -> None:
    r = run_cli(tmp_path / "missing.toml", "--host", "alpha")
    assert r.exit_code == 2 and "error:" in r.stderr


def test_cli_iprotate_host_gets_a_note(cluster_file: Path) -> None:
    r = run_cli(cluster_file, "--host", "alpha")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip()
    assert "iprotate run" in r.stderr and 'engine = "iprotate"' in r.stderr


def test_cli_host_without_vips(tmp_path: Path) -> None:
    body = EXAMPLE_BODY.replace("203.0.113.10-203.0.113.15/24", "203.0.113.10/24")
    body = body.replace("pool =", "address =")
    body = body.replace("dead_ratio = 3", "dead_ratio = 3\nbackups = 0")
    path = write_cluster(tmp_path, body)
    p = make_plan(load_cluster(path))
    idle = [h for h in ("alpha", "bravo", "charlie") if not p.for_host(h)]
    assert idle
    for fmt in ("shell", "json", "systemd", "ifupdown"):
        r = run_cli(path, "--host", idle[0], "--format", fmt)
        assert r.exit_code == 0, r.output
        assert "takes part in no VIP" in r.stderr
        if fmt == "json":
            assert json.loads(r.stdout)["instances"] == []
        else:
            assert r.stdout == ""


def test_cli_write_passfile(cluster_file: Path, tmp_path: Path) -> None:
    pf = tmp_path / "etc" / "pw"
    r = run_cli(cluster_file, "--host", "charlie", "--passfile", pf, "--write-passfile")
    assert r.exit_code == 0, r.output
    assert pf.read_bytes() == PASSWORD.encode() + b"\n"
    assert stat.S_IMODE(pf.stat().st_mode) == 0o600
    assert stat.S_IMODE(pf.parent.stat().st_mode) == 0o700
    assert PASSWORD not in r.stdout + r.stderr
    # Rewriting keeps the mode (the file is replaced, never written in place).
    pf.chmod(0o644)
    r = run_cli(cluster_file, "--host", "charlie", "--passfile", pf, "--write-passfile")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(pf.stat().st_mode) == 0o600


def test_cli_example_charlie(tmp_path: Path) -> None:
    # The repository ships no password file (git cannot keep it mode 600): write it as the
    # README says.
    shutil.copy(EXAMPLE, tmp_path / "cluster.toml")
    (tmp_path / "secret").write_text("s3cret-pass\n")
    (tmp_path / "secret").chmod(0o600)
    r = run_cli(tmp_path / "cluster.toml", "--host", "charlie")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 9


# --- the contrib scripts --------------------------------------------------------------------------


def test_contrib_scripts_are_posix_sh() -> None:
    for name in ("vip-up.sh", "vip-down.sh"):
        path = CONTRIB / name
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert "\nset -eu\n" in text
        assert os.access(path, os.X_OK), f"{name} must be executable (ucarp execs it, no shell)"
        sh = shutil.which("dash") or "/bin/sh"
        subprocess.run([sh, "-n", str(path)], check=True)


# --- for real: namespaces and Debian's ucarp ------------------------------------------------------


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")


def need_ucarp() -> None:
    if not os.access(UCARP_BIN, os.X_OK):
        pytest.skip(f"needs Debian's ucarp ({UCARP_BIN})")


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
    """Seconds until cond() holds, or None after `timeout`."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)


def logs(paths: Sequence[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in paths if p.exists())


def install_scripts(tmp_path: Path) -> tuple[str, str]:
    out = []
    for name in ("vip-up.sh", "vip-down.sh"):
        dst = tmp_path / name
        shutil.copyfile(CONTRIB / name, dst)
        dst.chmod(0o755)
        out.append(str(dst))
    return out[0], out[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.fixture
def segment() -> Iterator[Segment]:
    """A Segment that is closed (processes stopped by PID, namespaces deleted) whatever happens,
    and checked to leave nothing behind: no namespace, no process it started or that ran in it."""
    need_root()
    with Segment() as seg:
        yield seg
        ours = [p.pid for p in seg.procs]
        ours += [pid for ns in seg.namespaces for pid in netns_pids(ns)]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    left = [n for n in listed.stdout.split() if n.startswith(seg.prefix)]
    assert not left, f"namespaces left behind: {left}"
    # close() SIGKILLs what is left in the namespaces; give the kernel a moment to finish them.
    wait_for(lambda: not any(pid_alive(p) for p in ours), 2)
    alive = {p: _proc_state(p) for p in ours if pid_alive(p)}
    assert not alive, f"processes left behind: {alive}"


def add_second_nic(seg: Segment, name: str) -> None:
    """eth2 in the member's namespace, for VIPs (a veth pair inside it: no dummy module needed)."""
    seg.run(name, "ip", "link", "add", "eth2", "type", "veth", "peer", "name", "eth2peer")
    for dev in ("eth2", "eth2peer"):
        seg.run(name, "ip", "link", "set", dev, "up")


@pytest.mark.netns
def test_real_contrib_scripts(segment: Segment, tmp_path: Path) -> None:
    """The scripts as ucarp calls them: every xparam form, alias labels, idempotence, bad input."""
    seg = segment
    seg.add("alpha", 1)
    add_second_nic(seg, "alpha")
    up, down = install_scripts(tmp_path)

    def call(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", seg.members["alpha"].netns, script, *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    def labels() -> dict[str, str]:
        out = seg.run("alpha", "ip", "-o", "-4", "addr", "show")
        return {f[3]: f[-1] for f in (line.split("\\")[0].split() for line in out.splitlines())}

    for xparam, dev, addr in [
        ("24", "eth1", "203.0.113.10/24"),
        ("28@eth2", "eth2", "203.0.113.10/28"),
        ("26 eth2", "eth2", "203.0.113.10/26"),
        (None, "eth1", "203.0.113.10/32"),
    ]:
        args = ("eth1", "203.0.113.10", *([xparam] if xparam is not None else []))
        for _ in range(2):  # the second time: "already there" / "not there" is fine
            t0 = time.monotonic()
            r = call(up, *args)
            assert r.returncode == 0, r.stderr
            assert time.monotonic() - t0 < 1.0  # arping runs in the background
            assert addr in seg.addresses("alpha", dev)
        for _ in range(2):
            r = call(down, *args)
            assert r.returncode == 0, r.stderr
            assert addr not in seg.addresses("alpha", dev)

    # An ifupdown alias (eth1:10) is eth1, and becomes the address label.
    assert call(up, "eth1:10", "203.0.113.10", "24").returncode == 0
    assert labels()["203.0.113.10/24"] == "eth1:10"
    assert call(down, "eth1:10", "203.0.113.10", "24").returncode == 0
    assert "203.0.113.10/24" not in labels()

    for script in (up, down):
        for bad in [("eth1",), ("eth1", "203.0.113.10", "33"), ("eth1", "x", "24"),
                    ("eth1", "203.0.113.10", "24@")]:  # fmt: skip
            r = call(script, *bad)
            assert r.returncode == 2 and "usage" in r.stderr, (script, bad, r)
    r = call(up, "eth1", "203.0.113.10", "24@nosuch")
    assert r.returncode == 1 and "nosuch" in r.stderr


TWO_HOSTS = """
[cluster]
interface = "eth1"
password_file = "secret"
advbase = 1
dead_ratio = 3

[[hosts]]
name = "alpha"
address = "198.51.100.1"
engine = "ucarp"

[[hosts]]
name = "bravo"
address = "198.51.100.2"
engine = "ucarp"

[[vips]]
pool = "203.0.113.10-203.0.113.11/24"
"""


def vips_on(seg: Segment, name: str) -> set[str]:
    return {a for a in seg.addresses(name) if a.startswith("203.0.113.")}


@pytest.mark.netns
@pytest.mark.ucarp
@pytest.mark.timeout(90)
def test_real_ucarp_from_generated_lines(segment: Segment, tmp_path: Path) -> None:
    """Two hosts, two VIPs, the generated lines run by Debian's ucarp: each VIP settles on its
    owner with the right prefix, a stopped owner's VIP is released (-z runs the downscript) and
    taken over by the other host, and stopping everything removes every VIP."""
    need_ucarp()
    seg = segment
    path = write_cluster(tmp_path, TWO_HOSTS)
    p = make_plan(load_cluster(path))
    up, down = install_scripts(tmp_path)
    passfile = tmp_path / "ucarp-password"
    r = run_cli(path, "--host", "alpha", "--passfile", passfile, "--write-passfile")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600

    procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
    logfiles: list[Path] = []
    for k, host in enumerate(("alpha", "bravo"), start=1):
        seg.add(host, k)
        r = run_cli(path, "--host", host)  # the default shell format, as an operator gets it
        assert r.exit_code == 0, r.output
        for line in r.stdout.splitlines():
            argv = shlex.split(line)
            argv.remove("-B")  # stay in the foreground, tracked by PID
            subst = {
                ucarp.DEFAULT_UPSCRIPT: up,
                ucarp.DEFAULT_DOWNSCRIPT: down,
                ucarp.DEFAULT_PASSFILE: str(passfile),
            }
            argv = [subst.get(a, a) for a in argv]
            vip = argv[argv.index("-a") + 1]
            log = tmp_path / f"ucarp-{host}-{vip}.log"
            logfiles.append(log)
            procs[(host, vip)] = seg.spawn(host, argv, log=str(log))

    owner = {str(v.ip): v.owner for v in p.vips}
    assert sorted(owner.values()) == ["alpha", "bravo"]  # one VIP each

    def settled() -> bool:
        return all(
            vips_on(seg, h) == {f"{ip}/24" for ip, o in owner.items() if o == h}
            for h in ("alpha", "bravo")
        )

    # A fresh ucarp is BACKUP for D = advbase * dead_ratio (+ skew/256) before it takes over; a
    # backup may briefly take over too (ucarp's pcap lag is up to 1 s) and yields to the owner.
    bound = 1 * 3 + 2
    took = wait_for(settled, bound + 2)
    assert took is not None, f"not settled after {bound + 2} s:\n" + logs(logfiles)
    print(f"settled {took:.2f} s after start")
    time.sleep(2.5)  # and it stays that way
    assert settled(), logs(logfiles)
    for (host, vip), proc in procs.items():
        assert proc.poll() is None, f"ucarp {host} {vip} exited:\n" + logs(logfiles)

    # Stop alpha's ucarps (SIGTERM): -z runs the downscript, so alpha's VIP leaves alpha...
    alpha_vip = next(ip for ip, o in owner.items() if o == "alpha")
    for (host, _), proc in procs.items():
        if host == "alpha":
            seg.stop(proc)
            assert proc.returncode == 0, logs(logfiles)
    assert vips_on(seg, "alpha") == set(), logs(logfiles)
    # ...and bravo takes it over within its master-down time plus ucarp's 1 s lag.
    skew = next(v for v in p.vips if str(v.ip) == alpha_vip).advskew_of("bravo")
    bound_takeover = 1 * 3 + skew / 256 + 1 + 1
    took = wait_for(lambda: vips_on(seg, "bravo") == {f"{ip}/24" for ip in owner}, bound_takeover)
    assert took is not None, "bravo did not take over:\n" + logs(logfiles)
    print(f"bravo took {alpha_vip} over {took:.2f} s after alpha stopped")

    for (host, _), proc in procs.items():
        if host == "bravo":
            seg.stop(proc)
            assert proc.returncode == 0, logs(logfiles)
    assert vips_on(seg, "bravo") == set(), logs(logfiles)
    for proc in procs.values():
        assert proc.poll() is not None
    text = logs(logfiles)
    assert "Spawning" in text and PASSWORD not in text


@pytest.mark.netns
@pytest.mark.ucarp
@pytest.mark.timeout(60)
def test_real_vip_interface_and_debian_hook(segment: Segment, tmp_path: Path) -> None:
    """The ifupdown stanzas, run by Debian's own hook (/etc/network/if-up.d/ucarp) as ifupdown would
    (alias interface eth1:10, -B), put the VIP on the host's vip_interface (xparam PREFIX@IFACE);
    SIGTERM to the daemonized ucarp removes it."""
    need_ucarp()
    if not os.access(DEBIAN_HOOK, os.X_OK):
        pytest.skip(f"needs Debian's ucarp hook {DEBIAN_HOOK}")
    seg = segment
    body = TWO_HOSTS.replace('engine = "ucarp"', 'engine = "ucarp"\nvip_interface = "eth2"', 1)
    body = body.replace('pool = "203.0.113.10-203.0.113.11/24"', 'address = "203.0.113.10/28"')
    path = write_cluster(tmp_path, body)
    up, down = install_scripts(tmp_path)
    m = seg.add("alpha", 1)
    add_second_nic(seg, "alpha")

    r = run_cli(
        path, "--host", "alpha", "--format", "ifupdown", "--upscript", up, "--downscript", down
    )
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr
    (iface, opts), *rest = stanzas(r.stdout).items()
    assert not rest and iface == "eth1:10"
    assert opts["ucarp-xparam"] == "28@eth2"
    ifquery = shutil.which("ifquery")
    if ifquery:  # ifupdown itself reads the stanza the same way
        (tmp_path / "interfaces").write_text(r.stdout)
        q = subprocess.run(
            [ifquery, "-i", str(tmp_path / "interfaces"), iface],
            capture_output=True,
            text=True,
            check=True,
        )
        assert dict(x.split(": ", 1) for x in q.stdout.splitlines()) == opts
    env = {
        "PATH": "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin",
        "IFACE": iface,
        "LOGICAL": iface,
        "ADDRFAM": "inet",
        "METHOD": "manual",
        "MODE": "start",
        "PHASE": "post-up",
        **{"IF_" + k.upper().replace("-", "_"): v for k, v in opts.items()},
    }
    hook = seg.spawn("alpha", [DEBIAN_HOOK], log=str(tmp_path / "hook.log"), env=env)
    assert hook.wait(timeout=10) == 0, (tmp_path / "hook.log").read_text()

    def daemons() -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", m.netns], capture_output=True, text=True)
        return [
            int(x)
            for x in out.stdout.split()
            if Path(f"/proc/{x}/comm").exists()
            and Path(f"/proc/{x}/comm").read_text().strip() == "ucarp"
        ]

    # -B forks: wait until one ucarp is left, the same one twice in a row (the daemon).
    seen = [daemons()]
    for _ in range(50):
        time.sleep(0.1)
        seen.append(daemons())
        if len(seen[-1]) == 1 and seen[-1] == seen[-2]:
            break
    assert len(seen[-1]) == 1 and seen[-1] == seen[-2], seen
    (pid,) = seen[-1]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        # What the warning is about: Debian's hook gives ucarp the password as an argument.
        assert PASSWORD.encode() in cmdline
        assert b"eth1:10" in cmdline
        got = wait_for(lambda: "203.0.113.10/28" in seg.addresses("alpha", "eth2"), 3 + 2)
        assert got is not None, seg.addresses("alpha", "eth2")
        assert not vips_on(seg, "alpha")  # not on the advert interface
    finally:
        os.kill(pid, signal.SIGTERM)  # our daemon, found by PID in our namespace
        assert wait_for(lambda: not pid_alive(pid), 5) is not None
    assert "203.0.113.10/28" not in seg.addresses("alpha", "eth2")
