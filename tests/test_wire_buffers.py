"""The CARP sockets' buffers: sized for a segment's VIPs both ways (engine.wire.grow_buffers)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from iprotate.engine.wire import grow_buffers, receive_buffer_size


def test_both_buffers_hold_a_burst_of_every_vip() -> None:
    size = receive_buffer_size(4000)  # 4 MiB: one packet per VIP with room to spare
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        grow_buffers(s, size)
        got = [s.getsockopt(socket.SOL_SOCKET, o) for o in (socket.SO_RCVBUF, socket.SO_SNDBUF)]
    if os.geteuid() == 0:  # past rmem_max / wmem_max (CAP_NET_ADMIN): what the daemon gets
        want = [2 * size, 2 * size]  # the kernel doubles what is asked
    else:  # capped by the sysctls
        caps = [int(Path(f"/proc/sys/net/core/{n}").read_text()) for n in ("rmem_max", "wmem_max")]
        want = [2 * min(size, cap) for cap in caps]
    assert got == want
