"""`iprotate import`: today's ucarp and keepalived setups -> a cluster file, on the seeds' layouts
and on round trips through iprotate's own generators."""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iprotate.cli import main
from iprotate.cluster.loader import load_cluster
from iprotate.export import importer
from iprotate.plan.planner import make_plan

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def imported(tmp_path: Path, *hosts: str, extra: tuple[str, ...] = ()) -> tuple[Any, dict]:
    """Run `iprotate import` on NAME=FILE pairs; (the result, the written cluster file)."""
    out = tmp_path / "out" / "cluster.toml"
    args = ["import", "-o", str(out), *extra]
    for h in hosts:
        args += ["--host", h]
    r = run(*args)
    assert r.exit_code == 0, r.output
    return r, tomllib.loads(out.read_text())


def test_seed_002_two_ucarp_hosts(tmp_path: Path) -> None:
    """Two hosts, two VIPs, each host the preferred master of one (-k 1 -P -b 1 against -b 3)."""
    r, doc = imported(tmp_path, f"a={FIXTURES / 'seed002-a.sh'}", f"b={FIXTURES / 'seed002-b.sh'}")
    assert [(h["name"], h["address"], h["interface"]) for h in doc["hosts"]] == [
        ("a", "198.51.100.1", "eth1"),
        ("b", "198.51.100.2", "eth1"),
    ]
    assert [(v["address"], v["vhid"], v["owner"]) for v in doc["vips"]] == [
        ("203.0.113.10/32", 1, "a"),
        ("203.0.113.11/32", 2, "b"),
    ]
    assert {h["engine"] for h in doc["hosts"]} == {"ucarp"}  # today's setup, reproduced
    c = doc["cluster"]
    assert (c["advbase"], c["dead_ratio"], c["backups"]) == (1, 3, 1)
    assert (c["up_script"], c["down_script"]) == ("/etc/vip-up.sh", "/etc/vip-down.sh")
    pw = tmp_path / "out" / "password"
    assert pw.read_bytes() == b"love\n" and stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert not re.search(r"\blove\b", r.output)  # never printed
    # Nothing dropped silently: each thing that did not carry over is said.
    for said in ("not a ucarp command line", "eth1:0, eth1:1 are alias", "/32 assumed",
                 "advbase 3 today", "SCRIPT IFACE VIP XPARAM"):  # fmt: skip
        assert said in r.output, said
    assert "preempts nothing" not in r.output  # -P where it matters (on the VIPs they own)
    plan = make_plan(load_cluster(tmp_path / "out" / "cluster.toml"))
    assert [v.order for v in plan.vips] == [("a", "b"), ("b", "a")]
    assert "failover order: 2 VIP(s) as today" in r.output


def test_seed_004_debian_stanzas(tmp_path: Path) -> None:
    """Debian's ifupdown layout: the VIP's prefix from its own stanza, the master by ucarp-master
    (equal priorities otherwise: said), the slave that preempts nothing said too."""
    r, doc = imported(
        tmp_path,
        f"m={FIXTURES / 'seed004-master.interfaces'}",
        f"s={FIXTURES / 'seed004-slave.interfaces'}",
    )
    assert doc["vips"] == [{"address": "203.0.113.100/24", "vhid": 1, "owner": "m"}]
    assert doc["hosts"][1] == {
        "name": "s", "address": "198.51.100.6", "engine": "ucarp", "interface": "eth0",
        "preempt": False,
    }  # fmt: skip
    assert "the same priority today" in r.output and "s preempts nothing" in r.output


def test_seed_004_ucarp_conf_and_start_script(tmp_path: Path) -> None:
    """A ucarp.conf of UCARP_* variables and the start script that sources it, per host, in that
    order: the variables fill the command line, UCARP_MASK gives the prefix, and with equal
    priorities the host that preempts is the owner."""
    r, doc = imported(
        tmp_path,
        f"m={FIXTURES / 'seed004-ucarp.conf'}",
        f"m={FIXTURES / 'seed004-start-master.sh'}",
        f"s={FIXTURES / 'seed004-ucarp-slave.conf'}",
        f"s={FIXTURES / 'seed004-start-slave.sh'}",
    )
    assert doc["vips"] == [{"address": "203.0.113.100/24", "vhid": 1, "owner": "m"}]
    assert [(h["name"], h["address"]) for h in doc["hosts"]] == [
        ("m", "198.51.100.5"), ("s", "198.51.100.6"),
    ]  # fmt: skip
    assert (tmp_path / "out" / "password").read_bytes() == b"secret\n"
    assert "from UCARP_MASK" in r.output and "not followed" not in r.output
    assert not re.search(r"\bsecret\b", r.output)


def test_keepalived_instances(tmp_path: Path) -> None:
    r, doc = imported(
        tmp_path,
        f"lb1={FIXTURES / 'keepalived-two.conf'}",
        f"lb2={FIXTURES / 'keepalived-two-b.conf'}",
    )
    vips = {v["address"]: v for v in doc["vips"]}
    assert vips["203.0.113.50/24"]["vhid"] == 51 and vips["203.0.113.50/24"]["owner"] == "lb1"
    assert vips["203.0.113.52/24"]["owner"] == "lb2"  # priority 200 against 100
    assert vips["203.0.113.51/24"]["vhid"] not in (51, 52)  # a vhid of its own, pinned
    assert vips["203.0.113.50/24"]["up_script"] == "/etc/keepalived/up.sh"
    assert (tmp_path / "out" / "password").read_bytes() == b"kp4ss\n"
    for said in ("shares virtual_router_id 51", "cannot share a VIP"):
        assert said in r.output, said
    # The tracked vrrp_script becomes an exec check of the VIPs that track it.
    (chk,) = doc["checks"]
    assert chk["name"] == "haproxy" and chk["exec"] == ["/usr/bin/killall", "-0", "haproxy"]
    assert chk["vips"] == ["203.0.113.50/24", "203.0.113.51/24"]
    assert chk["hosts"] == ["lb1", "lb2"] and (chk["interval"], chk["fall"]) == (2, 1)
    # Without the owner pins the planner would move one VIP: said in plan --diff's style.
    assert "without the owner pins" in r.output and "changed: 1" in r.output


def test_keepalived_checks_round_trip(tmp_path: Path) -> None:
    """`iprotate keepalived` of a file with [[checks]] -> import: the checks come back as exec
    checks of the same VIPs on the same hosts (http and tcp as the commands keepalived runs)."""
    src = Path(__file__).resolve().parent / "fixtures" / "exports" / "keepalived.toml"
    hosts = []
    for h in ("alpha", "bravo", "charlie"):
        r = run("keepalived", str(src), "--host", h, "--unicast")
        assert r.exit_code == 0, r.output
        (tmp_path / f"{h}.conf").write_text(r.stdout)
        hosts.append(f"{h}={tmp_path / f'{h}.conf'}")
    _r, doc = imported(tmp_path, *hosts)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["db"]["exec"] == ["/usr/local/bin/check-db", "--quick"]
    assert checks["db"]["hosts"] == ["alpha"] and checks["db"]["user"] == "nobody"
    assert len(checks["db"]["vips"]) == 7  # every VIP: the file's default
    assert checks["web"]["exec"][0] == "/usr/bin/curl"
    assert sorted(checks["web"]["vips"]) == [f"203.0.113.{n}/24" for n in (10, 11, 12)]
    plan = make_plan(load_cluster(tmp_path / "out" / "cluster.toml"))
    assert {c.name for c in plan.cluster.checks} == {"db", "web"}


def test_two_hosts_claiming_one_vhid_with_different_vips_are_reported(tmp_path: Path) -> None:
    a = tmp_path / "a.sh"
    b = tmp_path / "b.sh"
    a.write_text("ucarp -i eth0 -s 198.51.100.1 -v 7 -p pw -a 203.0.113.7 -P\n"
                 "ucarp -i eth0 -s 198.51.100.1 -v 8 -p pw -a 203.0.113.8 -P\n")  # fmt: skip
    b.write_text("ucarp -i eth0 -s 198.51.100.2 -v 7 -p pw -a 203.0.113.70 -k 10\n"
                 "ucarp -i eth0 -s 198.51.100.2 -v 8 -p pw -a 203.0.113.8 -k 10\n")  # fmt: skip
    r, doc = imported(tmp_path, f"a={a}", f"b={b}")
    assert "vhid 7 (group 224.0.0.18) is claimed with different VIPs" in r.output
    assert [v["address"] for v in doc["vips"]] == ["203.0.113.8/32"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ucarp -i eth0 -v 1 -p pw -a 203.0.113.1", "no --srcip"),
        ("ucarp -i eth0 -s 198.51.100.1 -v 1 -a 203.0.113.1", "no --pass or --passfile"),
        ("ucarp -i eth0 -s 198.51.100.1 -v 1 -p pw -a 203.0.113.1 -Q", "-Q is not a ucarp"),
        ("ucarp -i eth0 -s 198.51.100.1 -v 300 -p pw -a 203.0.113.1", "becomes 44"),
        ("ucarp -i eth0 -s 198.51.100.1 -v 1 -p pw -a 203.0.113.1 -k", "-k needs a value"),
        ("ucarp -i eth0 -s 198.51.100.1 -v 1 -p 'pw -a 203.0.113.1", "No closing quotation"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "h.sh"
    f.write_text("# start script\n" + line + "\n")
    r = run("import", "--host", f"h={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2, r.output
    assert f"{f}:2" in r.output and message in r.output
    assert not (tmp_path / "c.toml").exists()


def test_ucarp_option_forms_as_getopt_reads_them() -> None:
    p = importer.parse_ucarp_lines(
        "h",
        "f",
        "sudo /usr/sbin/ucarp --interface=eth2 --srcip 198.51.100.9 -v010 --pass=x "
        "--addr=203.0.113.9 --advb=2 -k 0x10 -P -zB --mcastip=224.0.0.19 -x 24@eth3\n",
    )
    (i,) = p.instances
    assert (i.interface, str(i.address), i.vhid, i.advbase, i.advskew) == (
        "eth2", "198.51.100.9", 8, 2, 16,
    )  # fmt: skip
    assert (str(i.vip), i.vip_interface, str(i.group), i.preempt) == (
        "203.0.113.9/24", "eth3", "224.0.0.19", True,
    )  # fmt: skip


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "c.toml"
    out.write_text("keep me")
    r = run("import", "--host", f"a={FIXTURES / 'seed002-a.sh'}", "-o", str(out))
    assert r.exit_code == 2 and "exists" in r.output and out.read_text() == "keep me"


def test_keepalived_without_address_or_password(tmp_path: Path) -> None:
    f = tmp_path / "k.conf"
    f.write_text("vrrp_instance V {\n interface eth0\n virtual_router_id 9\n priority 100\n"
                 " virtual_ipaddress {\n  203.0.113.9/24\n }\n}\n")  # fmt: skip
    r = run("import", "--host", f"k={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2 and "--address k=IP" in r.output
    r = run("import", "--host", f"k={f}", "--address", "k=198.51.100.9",
            "-o", str(tmp_path / "c.toml"))  # fmt: skip
    assert r.exit_code == 0, r.output
    pw = (tmp_path / "password").read_bytes()
    assert 8 <= len(pw.strip()) <= 19 and pw.strip().decode() not in r.output
    assert "a new random one" in r.output


# --- round trips ---------------------------------------------------------------------------------

ROUND_TRIP = """
[cluster]
interface = "eth1"
password_file = "pw"
advbase = 1
backups = 2

[[hosts]]
name = "alpha"
address = "198.51.100.1"

[[hosts]]
name = "bravo"
address = "198.51.100.2"
vip_interface = "eth2"

[[hosts]]
name = "charlie"
address = "198.51.100.3"

[[hosts]]
name = "delta"
address = "198.51.100.4"
preempt = false

[[vips]]
pool = "203.0.113.10-203.0.113.29/24"

[[vips]]
address = "198.51.100.200/25"
vhid = 200
"""


def _by_address(plan_json: dict[str, Any]) -> dict[str, Any]:
    return {v["address"]: v for v in plan_json["vips"]}


# keepalived carries IPv6 VIPs too (VRRPv3); ucarp does not.
ROUND_TRIP6 = (
    re.sub(
        r'address = "198\.51\.100\.(\d)"\n',
        lambda m: f'{m.group(0)}address6 = "2001:db8::{m.group(1)}"\n',
        ROUND_TRIP,
    )
    + '\n[[vips]]\npool = "2001:db8::10-2001:db8::13/64"\n'
)


@pytest.mark.parametrize(
    ("command", "text", "vips"),
    [
        (("ucarp",), ROUND_TRIP, 21),
        (("ucarp", "--format", "ifupdown"), ROUND_TRIP, 21),
        (("keepalived", "--unicast"), ROUND_TRIP, 21),
        (("keepalived", "--unicast"), ROUND_TRIP6, 25),
    ],
    ids=["ucarp-lines", "ifupdown", "keepalived", "keepalived-ipv6"],
)
def test_round_trip_gives_back_the_same_plan(
    tmp_path: Path, command: tuple[str, ...], text: str, vips: int
) -> None:
    """The plan's lines for every host -> `iprotate import` -> plan: the same plan (owners,
    orders, vhids, groups, advskews, preempt), VIP by VIP."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "cluster.toml").write_text(text)
    (src / "pw").write_text("rt-secret\n")
    (src / "pw").chmod(0o600)
    cluster = str(src / "cluster.toml")
    hosts = []
    for h in ("alpha", "bravo", "charlie", "delta"):
        args = [command[0], cluster, "--host", h, *command[1:]]
        if command[0] == "ucarp":
            args += ["--passfile", str(src / "pw")]
        r = run(*args)
        assert r.exit_code == 0, r.output
        (src / f"{h}.conf").write_text(r.stdout)
        hosts.append(f"{h}={src / f'{h}.conf'}")
    r, _doc = imported(tmp_path, *hosts)
    before = json.loads(run("plan", "--json", cluster).stdout)
    after = json.loads(run("plan", "--json", str(tmp_path / "out" / "cluster.toml")).stdout)
    assert _by_address(after) == _by_address(before)
    assert [h["name"] for h in after["hosts"]] == [h["name"] for h in before["hosts"]]
    assert "changed: 0" in r.output and f"{vips} VIP(s) as today" in r.output


def test_a_line_that_is_not_ucarps_is_named_but_not_printed(tmp_path: Path) -> None:
    """A start script's other lines may hold the password: only their first word is shown."""
    f = tmp_path / "start.sh"
    f.write_text("UCARP_PASS=hunter22 export UCARP_PASS\n"
                 "ucarp -i eth0 -s 198.51.100.1 -v 3 -p hunter22 -a 203.0.113.3 -P\n")  # fmt: skip
    r, _ = imported(tmp_path, f"a={f}")
    assert "hunter22" not in r.output
    assert f"{f}:1: not a ucarp command line (UCARP_PASS=... ...)" in r.output


# --- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "binary"])
def test_hostile_input_files_are_refused_quickly(tmp_path: Path, kind: str) -> None:
    f = tmp_path / "in"
    if kind == "fifo":
        os.mkfifo(f)  # a read would hang: refused at once
    elif kind == "device":
        f = Path("/dev/zero")
    elif kind == "huge":
        f.write_bytes(b"#" * (importer.MAX_INPUT + 1))
    else:
        f.write_bytes(bytes(range(256)) * 16)
    r = run("import", "--host", f"h={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "c.toml").exists()


def test_names_and_values_that_would_break_the_file_are_refused_before_writing(
    tmp_path: Path,
) -> None:
    f = tmp_path / "a.sh"
    f.write_text("ucarp -i eth0 -s 198.51.100.1 -v 3 -p pw -a 203.0.113.3 -P\n")
    r = run("import", "--host", f"../x={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2 and "not a host name" in r.output
    f.write_text("ucarp -i 'eth0\" x = [' -s 198.51.100.1 -v 3 -p pw -a 203.0.113.3 -P\n")
    r = run("import", "--host", f"a={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2 and "interface" in r.output, r.output
    assert not (tmp_path / "c.toml").exists() and not (tmp_path / "password").exists()


def test_the_password_file_replaces_a_planted_link_without_following_it(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "password").symlink_to(target)
    f = tmp_path / "a.sh"
    f.write_text("ucarp -i eth0 -s 198.51.100.1 -v 3 -p s3cret -a 203.0.113.3 -P\n")
    r = run("import", "--host", f"a={f}", "-o", str(out / "c.toml"), "--force")
    assert r.exit_code == 0, r.output
    assert target.read_text() == "untouched\n"
    pw = out / "password"
    assert not pw.is_symlink() and pw.read_bytes() == b"s3cret\n"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600


def test_a_hash_in_a_debian_stanza_value_is_not_a_comment(tmp_path: Path) -> None:
    f = tmp_path / "interfaces"
    f.write_text(
        "iface eth0 inet static\n    address 198.51.100.5\n    ucarp-vid 4\n"
        "    ucarp-vip 203.0.113.4\n    ucarp-password pa#ss\n    ucarp-master yes\n"
    )
    imported(tmp_path, f"m={f}")
    assert (tmp_path / "out" / "password").read_bytes() == b"pa#ss\n"


def test_the_password_file_stays_beside_the_cluster_file(tmp_path: Path) -> None:
    r = run("import", "--host", f"a={FIXTURES / 'seed002-a.sh'}", "-o", str(tmp_path / "c.toml"),
            "--password-file", "../escaped")  # fmt: skip
    assert r.exit_code == 2 and "beside the cluster file" in r.output
    assert not (tmp_path.parent / "escaped").exists()


KEEPALIVED_WITH = """vrrp_script chk_x {{
    script "/usr/local/bin/{script}"
}}
vrrp_instance VI_1 {{
    interface eth0
    virtual_router_id 10
    priority {prio}
    unicast_src_ip {src}
    virtual_ipaddress {{
        203.0.113.10/24
    }}
    track_script {{
        chk_x
    }}
    notify_master "/etc/{script}"
}}
"""


@pytest.mark.parametrize("name", ["\U0001f600check", "a\x7fb"])
def test_characters_json_and_toml_escape_differently_give_a_file_or_a_clear_error(
    tmp_path: Path, name: str
) -> None:
    """A character beyond U+FFFF (JSON: a surrogate pair, which TOML refuses) and DEL (raw in JSON,
    refused raw by TOML) in a script path: a valid file, or the loader's error; never a
    traceback."""
    hosts = []
    for host, prio, src in (("a", 150, "198.51.100.1"), ("b", 100, "198.51.100.2")):
        f = tmp_path / f"{host}.conf"
        f.write_text(KEEPALIVED_WITH.format(script=name, prio=prio, src=src))
        hosts += ["--host", f"{host}={f}"]
    out = tmp_path / "out" / "c.toml"
    r = run("import", "-o", str(out), *hosts)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    if name.isprintable():
        assert r.exit_code == 0, r.output
        assert load_cluster(out).checks[0].argv == (f"/usr/local/bin/{name}",)
    else:
        assert r.exit_code == 2 and "control character" in r.output, r.output
        assert not out.exists()


@pytest.mark.parametrize(
    "line",
    [
        "priority high",  # not a number
        "priority",  # no value
        "advert_int",  # no value
        "advert_int inf",  # float() takes it, round() overflows
        "notify_master /etc/it's.sh",  # shlex: an unbalanced quote
    ],
)
def test_a_keepalived_value_that_is_not_one_is_a_clear_error(tmp_path: Path, line: str) -> None:
    """Found by mutating the fixtures: each of these raised a traceback out of `import`. A
    keyword without a value keeps its default; a value that is not one is an error."""
    f = tmp_path / "k.conf"
    f.write_text(
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 10\n"
        f"    unicast_src_ip 198.51.100.1\n    {line}\n"
        "    virtual_ipaddress {\n        203.0.113.10/24\n    }\n}\n"
    )
    r = run("import", "--host", f"a={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    if line in ("priority", "advert_int"):
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and f"{f}:1: vrrp_instance VI_1" in r.output, r.output


@pytest.mark.parametrize("line", ["script /bin/it's", "user"])
def test_a_vrrp_script_that_cannot_be_read_is_left_out_with_a_note(
    tmp_path: Path, line: str
) -> None:
    f = tmp_path / "k.conf"
    f.write_text(
        f'vrrp_script chk_x {{\n    script "/bin/true"\n    {line}\n}}\n'
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 10\n"
        "    unicast_src_ip 198.51.100.1\n"
        "    virtual_ipaddress {\n        203.0.113.10/24\n    }\n}\n"
    )
    r = run("import", "--host", f"a={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--password=Tr0ub4dor", "'--password' is not a ucarp option"),  # --pass is ucarp's
        ("-p Tr0ub4dor horse", "a bare argument"),  # a password with a blank, unquoted
    ],
)
def test_a_bad_ucarp_line_never_prints_the_password(
    tmp_path: Path, args: str, message: str
) -> None:
    f = tmp_path / "h.sh"
    f.write_text(f"ucarp -i eth0 -s 198.51.100.1 -v 1 {args} -a 203.0.113.1\n")
    r = run("import", "--host", f"h={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Tr0ub4dor" not in r.output and "horse" not in r.output


def test_a_misplaced_keepalived_auth_pass_is_not_printed(tmp_path: Path) -> None:
    f = tmp_path / "k.conf"
    f.write_text(
        "auth_pass Tr0ub4dor\n"
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 10\n"
        "    unicast_src_ip 198.51.100.1\n"
        "    virtual_ipaddress {\n        203.0.113.10/24\n    }\n}\n"
    )
    r = run("import", "--host", f"a={f}", "-o", str(tmp_path / "c.toml"))
    assert r.exit_code == 0 and "auth_pass" in r.output, r.output
    assert "Tr0ub4dor" not in r.output


def test_keepalived_comments_are_read_as_keepalived_reads_them(tmp_path: Path) -> None:
    """keepalived's decomment(): '#' or '!' starts a comment anywhere outside double quotes and
    never inside them. The importer cut at a blank before '#'/'!' even inside quotes, so a
    `script "/bin/sh -c '! pidof x'"` lost its end (and its closing quote)."""
    f = tmp_path / "k.conf"
    f.write_text(
        "vrrp_script chk_x {\n    script \"/bin/sh -c '! pidof x'\"  # not running is good\n}\n"
        "vrrp_instance VI_1 {\n    interface eth0#main\n    virtual_router_id 10\n"
        "    unicast_src_ip 198.51.100.1\n"
        "    virtual_ipaddress {\n        203.0.113.10/24\n    }\n"
        "    track_script {\n        chk_x\n    }\n}\n"
    )
    r, doc = imported(tmp_path, f"a={f}")
    assert doc["checks"][0]["exec"] == ["/bin/sh", "-c", "! pidof x"], r.output
    assert doc["hosts"][0]["interface"] == "eth0"


def test_a_newline_in_an_input_file_name_never_becomes_a_line_of_the_cluster_file(
    tmp_path: Path,
) -> None:
    """The header names the input files: one named "a<newline>[run]<newline>x" ended the comment
    and wrote its own TOML."""
    f = tmp_path / 'a.sh\n[run]\nsyslog = "local7"\n#'
    f.write_text("ucarp -i eth0 -s 198.51.100.1 -v 3 -p pw -a 203.0.113.3 -P\n")
    _, doc = imported(tmp_path, f"a={f}")
    assert "run" not in doc, doc


def test_escape_sequences_in_an_input_file_never_reach_the_terminal(tmp_path: Path) -> None:
    f = tmp_path / "start.sh"
    f.write_text(
        "\x1b]0;owned\x07\x1b[2J ...\nucarp -i eth0 -s 198.51.100.1 -v 3 -p pw -a 203.0.113.3 -P\n"
    )
    r, _ = imported(tmp_path, f"a={f}")
    assert "not a ucarp command line" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
