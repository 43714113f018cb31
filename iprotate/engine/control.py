"""The control socket: a unix stream socket, one JSON request line, one JSON answer line.

Requests: {"cmd": "status"}, {"cmd": "drain", "vip": "203.0.113.10" | null},
{"cmd": "undrain", "vip": ...}, {"cmd": "reload"}, {"cmd": "netns"} (which network namespace the
daemon runs in, for clients that may not look at its /proc entry). The socket file is created mode
0600, and each connection's peer credentials (SO_PEERCRED) are checked too: only root, the daemon's
own user, and members of an optional group may talk to it.

Each host's daemon has its own socket, `/run/iprotate/<host>.sock` unless told otherwise, so the
daemons of several hosts on one machine (the lab, tests, one's own namespaces) never meet. Only a
stale socket (nobody accepts on it: its daemon died) is ever replaced; anything else at the path is
refused. Clients find the socket of the daemon of their own network namespace (`find_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from iprotate.cluster.model import IPAddress

log = logging.getLogger("iprotate")

SOCKET_DIR = "/run/iprotate"
NETNS_CMD = "netns"  # answered by the server itself: which network namespace it runs in
SUN_PATH_MAX = 107  # bytes of a socket path, without the terminating NUL (sun_path is 108)
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its line
LISTEN_BACKLOG = 1024  # connections waiting to be accepted (the kernel caps it at somaxconn)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached, or refused the request."""


def default_socket(host: str) -> str:
    """Where `host`'s daemon listens unless `[run] control_socket` or an option says otherwise."""
    return f"{SOCKET_DIR}/{host}.sock"


def peer_pid(sock: socket.socket) -> int:
    """The PID of the process at the other end of a unix socket (0: not in our PID namespace)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def connect(s: socket.socket, path: str, timeout: float) -> None:
    """connect() that waits out a full backlog. A unix socket's connect does not wait for room
    in the listener's backlog when a timeout is set: it fails at once with EAGAIN, and a daemon
    busy with a burst of clients looked like no daemon at all (status: UNKNOWN, or a bare
    "[Errno 11] Resource temporarily unavailable"). Retried until `timeout`, then one line."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ControlError(
                    f"{path}: the daemon is busy (its queue of connections is full); try again"
                ) from None
            time.sleep(0.01)


def listener_pid(path: str) -> int | None:
    """The PID of the process accepting on the socket at `path`; None if nobody listens there
    (a stale socket: connect() is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            connect(s, path, 2.0)
        except ConnectionRefusedError:
            return None
        return peer_pid(s)


def _what(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a socket"


def claim_path(path: str) -> None:
    """Make `path` free for our socket, or refuse with one line (ControlError): only a stale
    socket is removed; a live one, a file, a directory, a path too long or a parent that is not a
    directory are left as they are."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise ControlError(
            f"control socket {path}: too long for a unix socket "
            f"({len(os.fsencode(path))} bytes, at most {SUN_PATH_MAX})"
        )
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ControlError(f"control socket {path}: {p.parent} is not a directory") from None
    except OSError as e:
        raise ControlError(
            f"control socket {path}: cannot create {p.parent}: {e.strerror}"
        ) from None
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlError(f"control socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control socket {path} is {_what(mode)}: refusing to replace it")
    try:
        pid = listener_pid(path)
    except OSError as e:
        raise ControlError(f"control socket {path} cannot be checked: {e}") from None
    if pid is not None:
        who = f"pid {pid}" if pid else "another process"
        raise ControlError(f"control socket {path} is in use by {who}: refusing to take it")
    with contextlib.suppress(FileNotFoundError):
        p.unlink()  # stale: left by a daemon that was killed
        log.info("control: removed the stale socket %s", path)


def netns_id(pid: int | str = "self") -> tuple[int, int]:
    """The identity of a process's network namespace (OSError if we may not look)."""
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def _in_our_netns(path: str, pid: int) -> bool:
    """Whether the daemon `pid` listening at `path` runs in our network namespace. Only root may
    look at another user's /proc/<pid>/ns; anyone else (the control group) asks the daemon."""
    try:
        if pid:
            return netns_id(pid) == netns_id()
    except PermissionError:
        pass
    except OSError:
        return False
    try:
        answer = request(path, {"cmd": NETNS_CMD}, timeout=2.0)
    except ControlError:
        return False
    return tuple(answer.get("netns", ())) == netns_id()


def find_socket(candidates: Iterable[str] = ()) -> str:
    """The control socket of the daemon of this network namespace: among `candidates` and
    `SOCKET_DIR/*.sock`, the live ones whose daemon shares our network namespace. ControlError
    if there is none, or several (then --host or --socket says which)."""
    paths = dict.fromkeys([*candidates, *sorted(str(p) for p in Path(SOCKET_DIR).glob("*.sock"))])
    mine, denied = [], []
    for path in paths:
        try:
            pid = listener_pid(path)
        except PermissionError:
            denied.append(path)
            continue
        except OSError:
            continue  # missing, or not a socket
        if pid is not None and _in_our_netns(path, pid):
            mine.append(path)
    if len(mine) == 1:
        return mine[0]
    if not mine and denied:
        raise ControlError(
            f"not allowed to use {', '.join(denied)} (root or the control group); "
            "no other daemon of this network namespace answers"
        )
    if not mine:
        raise ControlError(
            f"no iprotate daemon of this network namespace answers in {SOCKET_DIR} "
            "(is `iprotate run` running? with [run] control_socket set, give --socket PATH)"
        )
    raise ControlError(
        f"several daemons run in this network namespace ({', '.join(mine)}): "
        "say which with --host NAME or --socket PATH"
    )


def peer_uid_gid(sock: socket.socket) -> tuple[int, int]:
    """The uid and gid of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, gid = struct.unpack("3i", creds)
    return uid, gid


def allowed(uid: int, gid: int, group: str | None) -> bool:
    """Root, our own user, or a member of `group`."""
    if uid in (0, os.geteuid()):
        return True
    if group is None:
        return False
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return False
    if gid == g.gr_gid:
        return True
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name in g.gr_mem
    except KeyError:
        return False


class ControlServer:
    """Serves `handler` on a unix socket at `path`."""

    def __init__(self, path: str, handler: Handler, group: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self._server: asyncio.AbstractServer | None = None
        self._bound = -1  # the inode of the socket we bound, to remove only that one

    async def bind(self) -> None:
        """Take the path (see `claim_path`; ControlError if refused), bind and listen, without
        answering yet: connections wait in the backlog until `serve`. Listening at once keeps the
        socket live to anyone checking it (a stale socket is one nobody listens on)."""
        claim_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never world-connectable, not even for an instant
        try:
            sock.bind(self.path)
            sock.listen(LISTEN_BACKLOG)
            self._bound = os.stat(self.path).st_ino
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, start_serving=False, limit=MAX_REQUEST
            )
        except OSError as e:
            sock.close()
            self._remove_ours()
            raise ControlError(f"control socket {self.path}: {e.strerror}") from None
        finally:
            os.umask(old)
        if self.group is not None:
            with contextlib.suppress(KeyError):
                os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
                os.chmod(self.path, 0o660)

    async def serve(self) -> None:
        """Start answering requests."""
        assert self._server is not None
        await self._server.start_serving()

    async def start(self) -> None:
        await self.bind()
        await self.serve()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._remove_ours()

    def _remove_ours(self) -> None:
        """Remove our socket only: never a path someone else has taken since."""
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._bound:
                Path(self.path).unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid, gid = peer_uid_gid(writer.get_extra_info("socket"))
            # Another user: the group lookup may ask LDAP or NIS, which can hang; in a thread,
            # bounded, never in the loop that sends the adverts (a timeout drops the request).
            if uid not in (0, os.geteuid()) and not await asyncio.wait_for(
                asyncio.to_thread(allowed, uid, gid, self.group), REQUEST_TIMEOUT
            ):
                log.warning("control: refused a request from uid %d", uid)
                answer: dict[str, Any] = {"ok": False, "error": "permission denied"}
            else:
                answer = await self._answer(reader)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.debug("control: connection failed: %s", e)
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        """One request line in, one answer out; whatever comes in, an answer (never a
        traceback): too long, no newline in time, not JSON, nested too deeply, or the handler
        failing."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            return {"ok": False, "error": f"bad request: longer than {MAX_REQUEST} bytes"}
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise
            line = e.partial  # the client closed its side without a newline: take what came
        except TimeoutError:
            return {"ok": False, "error": f"bad request: no complete line in {REQUEST_TIMEOUT:g} s"}
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as e:
            return {"ok": False, "error": f"bad request: {str(e)[:200]}"}
        if request.get("cmd") == NETNS_CMD:
            return {"ok": True, "netns": list(netns_id())}
        try:
            return await self.handler(request)
        except Exception as e:  # a bug answers an error and is logged; the daemon carries on
            log.exception("control: request %.200r failed", request)
            return {"ok": False, "error": f"internal error: {type(e).__name__}"}


async def bind_server(
    path: str | None,
    handler: Handler,
    group: str | None,
    refused: Callable[[str], Exception] = ControlError,
) -> ControlServer | None:
    """A daemon's control server bound at `path`, not answering yet (`serve` when the daemon is
    ready); None without a path. A path that is refused raises `refused(why)`: the daemon's own
    start-up error, before it has touched anything."""
    if not path:
        return None
    server = ControlServer(path, handler, group)
    try:
        await server.bind()
    except ControlError as e:
        raise refused(str(e)) from None
    return server


class BadRequest(Exception):
    """A request the daemon refuses; the message is the error it answers."""


def drain_target(req: dict[str, Any], stopping: bool) -> IPAddress | None:
    """The VIP a drain or undrain request names, None for every VIP; BadRequest when it names
    no address, or when the daemon is stopping (its hand-over drains every VIP, not to be
    remembered: saving the drained state then would bring the host back with every VIP
    drained)."""
    if stopping:
        raise BadRequest(f"stopping: no {req.get('cmd')}")
    only = req.get("vip")
    if only is not None and not isinstance(only, str):
        raise BadRequest("vip must be an address, or absent for every VIP")
    try:
        # "" is no address: it must never mean "every VIP".
        return ip_address(only.split("/")[0]) if only is not None else None
    except ValueError:
        raise BadRequest(f"{only!r} is not an IP address") from None


def drain_answer(drained: Iterable[str], problem: str | None) -> dict[str, Any]:
    """The answer to a drain or undrain that was done: what is drained now, and a warning if
    the drained state could not be saved (`problem`: a restart will not remember it)."""
    answer: dict[str, Any] = {"ok": True, "drained": list(drained)}
    if problem is not None:
        answer["warning"] = f"done, but not remembered across a restart: {problem}"
    return answer


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon at `path` and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            connect(s, path, timeout)
            s.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"no daemon listening at {path} (is `iprotate run` running?)") from None
    except PermissionError:
        raise ControlError(f"not allowed to use {path} (root or the control group)") from None
    except OSError as e:
        raise ControlError(f"{path}: {e}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the daemon closed the connection without an answer") from None
    if not answer.get("ok", False):
        raise ControlError(answer.get("error", "request failed"))
    return answer
