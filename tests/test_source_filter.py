"""The kernel filter on the CARP socket (iprotate.engine.source_filter): adverts from hosts of the
cluster all pass, adverts from anyone else are dropped in the kernel but for a 1-in-64 sample."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from ipaddress import IPv4Address

import pytest
from labtools import WIRE_TOOL

from iprotate.carp import codec
from iprotate.engine.source_filter import MAX_SOURCES, SAMPLE_SHIFT, program
from iprotate.lab.netns import Segment

GROUP = "224.0.0.18"
HOST = IPv4Address("198.51.100.2")  # the sending namespace: a host of the cluster
STRANGER = IPv4Address("198.51.100.99")

LISTENER = textwrap.dedent(
    """
    import json, select, socket, struct, sys, time
    from ipaddress import IPv4Address
    from iprotate.engine.source_filter import attach
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    attach(s, [IPv4Address(a) for a in sys.argv[1:]])
    idx = socket.if_nametoindex("eth1")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("=4s4si", socket.inet_aton("224.0.0.18"), b"\\0" * 4, idx))
    print("ready", flush=True)
    seen = {}
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        if select.select([s], [], [], 0.2)[0]:
            src = socket.inet_ntoa(s.recv(2048)[12:16])
            seen[src] = seen.get(src, 0) + 1
    print(json.dumps(seen), flush=True)
    """
)


def _advert(src: IPv4Address, counter: int) -> str:
    carp = codec.encode_advert(
        vhid=10, advbase=1, advskew=0, counter=counter, vip=IPv4Address("203.0.113.10"),
        password=b"pw",
    )  # fmt: skip
    return codec.build_ip_packet(src, IPv4Address(GROUP), carp).hex()


def test_program_shape() -> None:
    insns = program([HOST, STRANGER, HOST])
    assert len(insns) == 1 + 2 + 6  # load, one compare per distinct address, accept + sampling
    assert len(program([IPv4Address(f"198.51.100.{i}") for i in range(MAX_SOURCES)])) > 0
    with pytest.raises(ValueError):
        program([])


@pytest.mark.netns
def test_the_kernel_drops_strangers_and_samples_them() -> None:
    with Segment() as seg:
        seg.add("r", 1)
        seg.add("s", 2)
        p = seg.spawn("r", [sys.executable, "-c", LISTENER, str(HOST)], stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"ready"
        # 64 adverts "from" the host, 6,400 from a stranger, sent from the other namespace.
        batch = 400
        host = [_advert(HOST, i) for i in range(64)]
        stranger = [_advert(STRANGER, i) for i in range(batch)]
        seg.run("s", sys.executable, WIRE_TOOL, "send", "eth1", GROUP, *host)
        for _ in range(16):
            seg.run("s", sys.executable, WIRE_TOOL, "send", "eth1", GROUP, *stranger)
            time.sleep(0.05)
        seen = json.loads(p.stdout.readline())
        p.wait(timeout=10)
    assert seen.get(str(HOST)) == 64
    expected = 16 * batch >> SAMPLE_SHIFT  # 100
    assert 30 <= seen.get(str(STRANGER), 0) <= 250, seen
    assert expected == 100
