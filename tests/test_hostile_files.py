"""Hostile cluster and password files through the real `iprotate check`: each one gets exit 2 and
one clear line per problem, at once; never a traceback, a hang or all the memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

GOOD = """\
[cluster]
interface = "eth1"
password_file = "secret"

[[hosts]]
name = "alpha"
address = "198.51.100.1"

[[hosts]]
name = "bravo"
address = "198.51.100.2"

[[vips]]
pool = "203.0.113.10-203.0.113.13/24"
"""


def check(path: Path, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """`iprotate check PATH` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "iprotate", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_text("s3cret-pass\n")
    (tmp_path / "secret").chmod(0o600)
    return tmp_path


def write(d: Path, text: str) -> Path:
    p = d / "cluster.toml"
    p.write_text(text)
    return p


def test_the_good_file_passes(cluster_dir: Path) -> None:
    r = check(write(cluster_dir, GOOD))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("weight", ["1e6", "1e308", "101"])
def test_absurd_weights(cluster_dir: Path, weight: str) -> None:
    text = GOOD.replace('address = "198.51.100.2"', f'address = "198.51.100.2"\nweight = {weight}')
    refused(check(write(cluster_dir, text)), "hosts[1].weight", "is not a number in (0, 100]")


def _fifo(path: Path) -> None:
    os.mkfifo(path)
    # Anyone who opened it for reading and waited for a writer would hang: nobody writes.


def test_a_fifo_as_the_cluster_file(tmp_path: Path) -> None:
    _fifo(tmp_path / "cluster.toml")
    refused(check(tmp_path / "cluster.toml", timeout=10.0), "not a regular file")


def test_a_fifo_as_the_password_file(cluster_dir: Path) -> None:
    (cluster_dir / "secret").unlink()
    _fifo(cluster_dir / "secret")
    refused(check(write(cluster_dir, GOOD), timeout=10.0), "cluster.password_file", "regular")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_the_cluster_or_password_file(cluster_dir: Path, device: str) -> None:
    refused(check(Path(device), timeout=10.0), "not a regular file")
    text = GOOD.replace('password_file = "secret"', f'password_file = "{device}"')
    refused(check(write(cluster_dir, text), timeout=10.0), "cluster.password_file")


def test_a_huge_cluster_file(cluster_dir: Path) -> None:
    p = write(cluster_dir, GOOD + "#" * (2 << 20) + "\n")
    refused(check(p), "more than the 1048576 allowed")


def test_nul_bytes(cluster_dir: Path) -> None:
    (cluster_dir / "cluster.toml").write_bytes(GOOD.encode().replace(b"alpha", b"al\0pha"))
    refused(check(cluster_dir / "cluster.toml"), "not a valid TOML file")
    refused(check(write(cluster_dir, GOOD.replace('"alpha"', '"al\\u0000pha"'))), "hosts[0].name")


def test_deeply_nested_arrays(cluster_dir: Path) -> None:
    refused(check(write(cluster_dir, GOOD + "x = " + "[" * 30000 + "]" * 30000 + "\n")))


def test_a_5000_digit_integer(cluster_dir: Path) -> None:
    text = GOOD.replace("[cluster]\n", "[cluster]\nadvbase = " + "9" * 5000 + "\n")
    refused(check(write(cluster_dir, text)), "not a valid TOML file")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('"alpha"', '"alpha\\n"', "hosts[0].name"),
        ('interface = "eth1"', 'interface = "eth1\\n"', "cluster.interface"),
        ('password_file = "secret"', 'password_file = "secret\\n"', "cluster.password_file"),
    ],
)
def test_a_trailing_newline_in_a_name(cluster_dir: Path, old: str, new: str, key: str) -> None:
    refused(check(write(cluster_dir, GOOD.replace(old, new))), key, "control character")


@pytest.mark.parametrize(
    "vip", ["255.255.255.255/32", "240.0.0.5/24", "203.0.113.0/24", "203.0.113.255/24", "1.2.3.4/0"]
)
def test_vips_that_cannot_be_served(cluster_dir: Path, vip: str) -> None:
    text = GOOD + f'\n[[vips]]\naddress = "{vip}"\nvhid = 200\n'
    refused(check(write(cluster_dir, text)), "vips[1].address")


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "224.0.0.18", "255.255.255.255"])
def test_host_addresses_that_cannot_be_a_host(cluster_dir: Path, address: str) -> None:
    text = GOOD.replace('"198.51.100.2"', f'"{address}"')
    refused(check(write(cluster_dir, text)), "hosts[1].address", "cannot be a host's address")


def test_a_control_group_that_does_not_exist(cluster_dir: Path) -> None:
    text = GOOD + '\n[run]\ncontrol_group = "no-such-group-here"\n'
    refused(check(write(cluster_dir, text)), "run.control_group", "is not a group on this machine")


def test_a_password_with_a_newline(cluster_dir: Path) -> None:
    text = GOOD.replace('password_file = "secret"', 'password = "first\\nsecond"')
    refused(check(write(cluster_dir, text)), "cluster.password", "line break")


def test_too_many_hosts_and_vips(cluster_dir: Path) -> None:
    hosts = "".join(
        f'\n[[hosts]]\nname = "h{i}"\naddress = "198.51.{100 + i // 250}.{1 + i % 250}"\n'
        for i in range(300)
    )
    refused(check(write(cluster_dir, GOOD + hosts)), "302 hosts; at most 256")
    pools = "".join(
        f'\n[[vips]]\npool = "198.{18 + k}.0.0-198.{18 + k}.255.255/32"\n' for k in range(2)
    )
    refused(check(write(cluster_dir, GOOD + pools)), "more than 65536 VIPs")


def test_check_never_blocks_on_a_fifo_even_with_a_writer_waiting(tmp_path: Path) -> None:
    """A FIFO with a writer that never finishes: still refused at once (fstat, not read)."""
    fifo = tmp_path / "cluster.toml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY)
        except OSError:
            return
        try:
            while not stop.wait(0.05):
                try:
                    os.write(fd, b"#")
                except OSError:
                    return
        finally:
            os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        refused(check(fifo, timeout=10.0), "not a regular file")
    finally:
        stop.set()
        # Unblock a writer still waiting in open() for a reader.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(timeout=5.0)
