"""Log lines to the local syslog socket (`iprotate run --syslog [FACILITY]`), for hosts without
systemd's journal.

One datagram per line on /dev/log, in the form syslog(3) sends: `<PRI>Mmm dd hh:mm:ss
iprotate[PID]: HOST: message`. The host name is in every line, as on stderr, so one syslog file
for several daemons (or a lab) still says who spoke.

The socket is non-blocking, on purpose: a syslog daemon that stalls (stopped, its queue full)
must never stall the event loop that sends the adverts, or a log line would cost a failover. A line
that cannot be sent at once is dropped and counted; the next line that gets through says how many
were lost. A syslog daemon restarted under us (the socket gone, then back) is reconnected to on
the next line.

/dev/log may also be a stream socket (syslog-ng's `unix-stream` source): then each line ends with a
NUL, as glibc's syslog(3) sends it, and what the reader has not taken yet waits in a bounded buffer
(MAX_PENDING): beyond it lines are dropped and counted as above, never waited for.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time

from iprotate.cluster.model import SYSLOG_FACILITIES

DEV_LOG = "/dev/log"
IDENT = "iprotate"
MAX_LINE = 8192  # bytes; longer lines are cut (a datagram has a limit, a log line should not)
MAX_PENDING = 1 << 16  # bytes waiting for a slow reader of a stream socket
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but the tab

# syslog(3)'s facility codes (RFC 5424 table 1), for the names the cluster file accepts.
FACILITY_CODES = {
    "auth": 4, "authpriv": 10, "cron": 9, "daemon": 3, "ftp": 11, "lpr": 6, "mail": 2, "news": 7,
    "syslog": 5, "user": 1, "uucp": 8, **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip
assert set(FACILITY_CODES) == set(SYSLOG_FACILITIES)


def severity(levelno: int) -> int:
    """The syslog severity of a Python log level: 7 debug, 6 info, 4 warning, 3 err, 2 crit."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class SyslogHandler(logging.Handler):
    """Sends each record as one datagram to the syslog socket, never blocking."""

    def __init__(self, facility: str, host: str, path: str = DEV_LOG) -> None:
        super().__init__()
        self.facility = FACILITY_CODES[facility]
        self.host = host
        self.path = path
        self.dropped = 0
        self.sock: socket.socket | None = None
        self.stream = False  # /dev/log is a stream socket: NUL-ended lines, `pending`
        self.pending = bytearray()
        self._connect()  # at start, a missing syslog socket is an error the operator sees

    def _connect(self) -> None:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_UNIX, kind)
            try:
                s.setblocking(False)
                s.connect(self.path)
            except OSError as e:
                s.close()
                if kind == socket.SOCK_DGRAM and e.errno == errno.EPROTOTYPE:
                    continue  # a stream socket listens there
                raise
            self.sock, self.stream = s, kind == socket.SOCK_STREAM
            self.pending.clear()  # a line cut by the last connection is not resent
            return

    def line(self, record: logging.LogRecord) -> bytes:
        """The datagram for one record."""
        pri = self.facility * 8 + severity(record.levelno)
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(record.created))
        # One record, one line: a newline inside a message would start a bogus line in the file,
        # a NUL would end the line early on a stream socket; no control character gets through.
        text = _CONTROL.sub(" ", self.format(record))
        data = f"<{pri}>{stamp} {IDENT}[{os.getpid()}]: {self.host}: {text}".encode(
            errors="replace"
        )
        return data[:MAX_LINE]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.line(record)
        except Exception:  # a record that cannot be formatted must not stop the daemon
            self.handleError(record)
            return
        if self.dropped:
            note = logging.LogRecord(
                record.name, logging.WARNING, "", 0,
                "%d log lines dropped: the syslog socket was full or gone", (self.dropped,),
                None,
            )  # fmt: skip
            if not self._send(self.line(note)):
                self.dropped += 1
                return
            self.dropped = 0
        if not self._send(data):
            self.dropped += 1

    def _send(self, data: bytes) -> bool:
        """One line; False if it could not go at once (full queue, syslog daemon gone)."""
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    self._connect()
                assert self.sock is not None
                if self.stream:
                    return self._queue(data + b"\0")
                self.sock.send(data)
                return True
            except BlockingIOError:
                return False  # the reader is behind: drop, never wait
            except OSError:
                # The socket went away (syslog daemon restarted): connect again, once.
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                if attempt == 2:
                    return False
        return False

    def _queue(self, frame: bytes) -> bool:
        """A stream socket: `frame` after what waits, as much sent as the reader takes now; False
        (dropped) if the buffer is full. OSError: the connection broke."""
        self._flush()
        if len(self.pending) + len(frame) > MAX_PENDING:
            return False
        self.pending += frame
        self._flush()
        return True

    def _flush(self) -> None:
        assert self.sock is not None
        while self.pending:
            try:
                n = self.sock.send(self.pending, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                return
            del self.pending[:n]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()
