"""The control socket: a unix stream socket, one JSON request line, one JSON answer line.

Requests: {"cmd": "status"}, {"cmd": "drain", "vip": "203.0.113.10" | null},
{"cmd": "undrain", "vip": ...}, {"cmd": "reload"}. The socket file is created mode 0600, and each
connection's peer credentials (SO_PEERCRED) are checked too: only root, the daemon's own user, and
members of an optional group may talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("iprotate")

DEFAULT_SOCKET = "/run/iprotate/iprotate.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its line

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached, or refused the request."""


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

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # a socket left by a killed run
        old = os.umask(0o177)  # never world-connectable, not even for an instant
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        if self.group is not None:
            with contextlib.suppress(KeyError):
                os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
                os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid, gid = peer_uid_gid(writer.get_extra_info("socket"))
            if not allowed(uid, gid, self.group):
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
        try:
            return await self.handler(request)
        except Exception as e:  # a bug answers an error and is logged; the daemon carries on
            log.exception("control: request %.200r failed", request)
            return {"ok": False, "error": f"internal error: {type(e).__name__}"}


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon at `path` and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
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
