"""Prometheus metrics for a running node, served over HTTP on an optional address (`--metrics`).

Nothing here touches prometheus_client's global registry: every exporter builds its own
`CollectorRegistry` (`make_registry`), so tests, a reload or two daemons in one process never see
each other's metrics. `NodeCollector` reads the node at scrape time through a callable, so a reload
that swaps the `Node` needs no re-registration.

Scrapes run in the HTTP server's threads while the asyncio loop mutates the node. Every dict is
copied (a single C-level operation under the GIL) before it is iterated, so a scrape never trips
over "dictionary changed size during iteration"; the values may be a few microseconds apart, which
no scrape can tell.

Metrics (per VIP this host takes part in, labels vip, vhid, group):

- ``iprotate_vip_state{state}``: 1 for the current state (init, backup, master), 0 for the others.
- ``iprotate_vip_state_seconds``: seconds since the last transition (not for a VIP still in init).
- ``iprotate_vip_transitions_total``, ``iprotate_vip_drained``.

Node-wide: ``iprotate_adverts_sent_total``, ``iprotate_adverts_received_total``,
``iprotate_packets_dropped_total{reason}``, ``iprotate_digest_failures_total``,
``iprotate_malformed_packets_total``, ``iprotate_errors_total``, ``iprotate_drift`` and
``iprotate_last_takeover_seconds{vip}``; with a hook runner, ``iprotate_hooks_total{result}``.

Per health check of this host (label check): ``iprotate_check_up`` (1 up, 0 down or not up yet),
``iprotate_check_runs_total{result}`` (passed, failed), ``iprotate_check_last_run_seconds`` and
``iprotate_check_run_seconds_total`` (how long runs take); per VIP ``iprotate_vip_sick`` (1 while
a check it depends on is not up here).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iprotate.carp import codec
from iprotate.carp.machine import State
from iprotate.carp.native_auth import Verdict

if TYPE_CHECKING:
    from iprotate.carp.node import Node

log = logging.getLogger("iprotate")

NodeFn = Callable[[], "Node | None"]
NowFn = Callable[[], float]


class HookCounts(Protocol):
    """What the exporter reads of the hook runner (iprotate.engine.hooks.HookRunner has it)."""

    succeeded: int
    failures: int
    timeouts: int


HooksFn = Callable[[], HookCounts | None]

VIP_LABELS = ("vip", "vhid", "group")

# The receive path's own checks (after decoding). Every other Reject is raised by the decoder, so a
# reason codec adds later is counted as malformed without touching this module.
_CALLER_REASONS = frozenset(
    {
        codec.Reject.BAD_DIGEST,
        codec.Reject.OWN_SOURCE,
        codec.Reject.UNKNOWN_VHID,
        codec.Reject.WRONG_GROUP,
    }
)
DECODE_REASONS: frozenset[str] = frozenset(
    r.value for r in codec.Reject if r not in _CALLER_REASONS
)
# Exported at 0 from the start, so rate() and alerts work before the first drop of each kind.
# After the digest: a sender that is no host, and the iprotate peers' authentication and freshness.
KNOWN_DROP_REASONS: frozenset[str] = (
    frozenset(r.value for r in codec.Reject)
    | {"not_a_host"}
    | {v.value for v in Verdict if v is not Verdict.OK}
)

_DROP_PREFIX = "drop_"
# What socket(AF_INET6) or binding "::" fails with where IPv6 is off or filtered out (seccomp).
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


class NodeCollector(Collector):
    """A custom collector reading the node returned by `node_fn` at every scrape.

    `node_fn` may return None (not started yet, or between reloads): the families then come
    without samples. `now_fn` returns the same monotonic clock the node is
    fed (the daemon's `loop.time`, which is safe to call from another thread).
    """

    def __init__(self, node_fn: NodeFn, now_fn: NowFn, hooks_fn: HooksFn | None = None) -> None:
        self._node_fn = node_fn
        self._now_fn = now_fn
        self._hooks_fn = hooks_fn

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields, without samples (for the registry's name check)."""
        return self._families(None, 0.0, None)

    def collect(self) -> Iterable[Metric]:
        """Every metric, read from the current node."""
        hooks = self._hooks_fn() if self._hooks_fn is not None else None
        return self._families(self._node_fn(), self._now_fn(), hooks)

    def _families(self, node: Node | None, now: float, hooks: HookCounts | None) -> list[Metric]:
        state = GaugeMetricFamily(
            "iprotate_vip_state",
            "1 for the VIP's current CARP state on this host, 0 for the others.",
            labels=[*VIP_LABELS, "state"],
        )
        state_seconds = GaugeMetricFamily(
            "iprotate_vip_state_seconds",
            "Seconds since the VIP's last transition on this host.",
            labels=list(VIP_LABELS),
        )
        transitions = CounterMetricFamily(
            "iprotate_vip_transitions_total",
            "CARP state transitions of the VIP on this host.",
            labels=list(VIP_LABELS),
        )
        drained = GaugeMetricFamily(
            "iprotate_vip_drained",
            "1 if this host is drained for the VIP (it hands it over and takes it only as a last "
            "resort).",
            labels=list(VIP_LABELS),
        )
        sent = CounterMetricFamily("iprotate_adverts_sent_total", "CARP adverts sent.")
        received = CounterMetricFamily(
            "iprotate_adverts_received_total", "Valid CARP adverts received (digest checked)."
        )
        dropped = CounterMetricFamily(
            "iprotate_packets_dropped_total",
            "Packets or adverts dropped, by reason.",
            labels=["reason"],
        )
        digest = CounterMetricFamily(
            "iprotate_digest_failures_total",
            "Adverts whose digest did not verify: a wrong password, or someone forging adverts.",
        )
        malformed = CounterMetricFamily(
            "iprotate_malformed_packets_total",
            "Packets that are not well-formed CARP advertisements (every decode reason).",
        )
        errors = CounterMetricFamily(
            "iprotate_errors_total",
            "Effects that failed to be carried out (address changes, sends).",
        )
        drift = GaugeMetricFamily(
            "iprotate_drift",
            "(VIP, peer) pairs whose adverts disagree with the plan (other priorities, failing the "
            "digest, a host not in the cluster file).",
        )
        takeover = GaugeMetricFamily(
            "iprotate_last_takeover_seconds",
            "How long the effects of the VIP's last takeover by this host took to carry out.",
            labels=["vip"],
        )
        hook_runs = CounterMetricFamily(
            "iprotate_hooks_total",
            "Up/down scripts finished, by result (succeeded, failed, timeout).",
            labels=["result"],
        )
        sick = GaugeMetricFamily(
            "iprotate_vip_sick",
            "1 while a health check the VIP depends on is not up on this host (it hands the VIP "
            "over and takes it only as a last resort).",
            labels=list(VIP_LABELS),
        )
        check_up = GaugeMetricFamily(
            "iprotate_check_up", "1 if the health check is up on this host.", labels=["check"]
        )
        check_runs = CounterMetricFamily(
            "iprotate_check_runs_total",
            "Runs of the health check, by result (passed, failed).",
            labels=["check", "result"],
        )
        check_last = GaugeMetricFamily(
            "iprotate_check_last_run_seconds",
            "How long the health check's last run took.",
            labels=["check"],
        )
        check_seconds = CounterMetricFamily(
            "iprotate_check_run_seconds_total",
            "Seconds spent in runs of the health check.",
            labels=["check"],
        )
        families: list[Metric] = [
            state, state_seconds, transitions, drained, sent, received, dropped, digest,
            malformed, errors, drift, takeover, hook_runs, sick, check_up, check_runs,
            check_last, check_seconds,
        ]  # fmt: skip
        if hooks is not None:
            hook_runs.add_metric(["succeeded"], float(hooks.succeeded))
            hook_runs.add_metric(["failed"], float(hooks.failures))
            hook_runs.add_metric(["timeout"], float(hooks.timeouts))
        if node is None:
            return families

        for (group, vhid), m in dict(node.machines).items():
            # Labels from the key and the machine alone: a reload may be changing node.vips.
            labels = [str(m.cfg.vip), str(vhid), str(group)]
            current = m.state  # read once: the loop may move it while we build the samples
            for s in State:
                state.add_metric([*labels, s.value.lower()], 1.0 if s is current else 0.0)
            if current is not State.INIT:
                state_seconds.add_metric(labels, max(0.0, now - m.since))
            transitions.add_metric(labels, float(m.transitions))
            drained.add_metric(labels, 1.0 if m.drained else 0.0)
            sick.add_metric(labels, 1.0 if m.sick else 0.0)

        for name, st in sorted(dict(getattr(node, "health", None) or {}).items()):
            check_up.add_metric([name], 1.0 if st.up else 0.0)
            check_runs.add_metric([name, "passed"], float(st.runs - st.failures))
            check_runs.add_metric([name, "failed"], float(st.failures))
            check_last.add_metric([name], float(st.last_seconds))
            check_seconds.add_metric([name], float(st.seconds_total))

        counters: dict[str, int] = dict(node.counters)
        sent.add_metric([], float(counters.get("adverts_sent", 0)))
        received.add_metric([], float(counters.get("adverts_received", 0)))
        drops = dict.fromkeys(KNOWN_DROP_REASONS, 0)
        for name, n in counters.items():
            if name.startswith(_DROP_PREFIX):
                drops[name[len(_DROP_PREFIX) :]] = n
        for reason in sorted(drops):
            dropped.add_metric([reason], float(drops[reason]))
        digest.add_metric([], float(drops[codec.Reject.BAD_DIGEST.value]))
        malformed.add_metric([], float(sum(drops.get(r, 0) for r in DECODE_REASONS)))
        errors.add_metric([], float(counters.get("errors", 0)))

        drift.add_metric([], float(len(dict(getattr(node, "drift", None) or {}))))

        times: Mapping[Any, float] = dict(getattr(node, "takeover_seconds", None) or {})
        for key, seconds in sorted(times.items(), key=lambda kv: _vip_label(node, kv[0])):
            takeover.add_metric([_vip_label(node, key)], float(seconds))
        return families


def _vip_label(node: Node, key: object) -> str:
    """The `vip` label for a takeover_seconds key: a (group, vhid) key or the VIP address itself."""
    if isinstance(key, tuple):
        m = node.machines.get(key)  # type: ignore[call-overload]
        if m is not None:
            return str(m.cfg.vip)
        v = node.vips.get(key)  # type: ignore[call-overload]
        if v is not None:
            return str(v.ip)
    if isinstance(key, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(key.ip)
    return str(key)


def make_registry(
    node_fn: NodeFn, now_fn: NowFn, hooks_fn: HooksFn | None = None, process: bool = True
) -> CollectorRegistry:
    """A fresh registry with a `NodeCollector` (and the process_* metrics unless `process` is
    False)."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node_fn, now_fn, hooks_fn))
    if process:
        # CPU, memory, open fds of the daemon: the first things to look at when it misbehaves.
        ProcessCollector(registry=registry)
    return registry


# --- the address ---------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")


def parse_address(address: str) -> tuple[str, int]:
    """Split a listen address into (host, port): ``127.0.0.1:9650``, ``[::1]:9650``,
    ``localhost:9650`` or ``:9650`` (host "": every address). Port 0 picks a free port.

    Raises ValueError saying what is wrong and what is allowed."""
    what = (
        f"metrics address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9650, [::1]:9650 "
        "or :9650 (every address)"
    )
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"{what}; the port is missing")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{what}; the port must be a number in 0..65535, got {port_text!r}")
    port = int(port_text)
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        try:
            ipaddress.IPv6Address(inner or "")
        except ValueError:
            raise ValueError(f"{what}; {host!r} is not a bracketed IPv6 address") from None
        return inner or "", port
    if ":" in host:
        raise ValueError(f"{what}; put an IPv6 address in brackets: [{host}]:{port}")
    if host and not _is_ipv4(host) and not _HOSTNAME_RE.match(host):
        raise ValueError(f"{what}; {host!r} is neither an address nor a host name")
    return host, port


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# --- the server ----------------------------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # wsgiref logs every request to stderr, which systemd puts in the journal: one line per
        # scrape is noise. Keep it at debug.
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A threaded WSGI server: a slow client cannot hold up the next scrape."""

    daemon_threads = True  # a scrape in progress never keeps the process alive at exit
    dual_stack = False

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Whatever net.ipv6.bindv6only says: ":PORT" (dual_stack) takes IPv4 too, mapped into
            # "::"; an IPv6 address given in brackets means IPv6 only.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, not self.dual_stack)
        socketserver.TCPServer.server_bind(self)
        # Not HTTPServer.server_bind: its getfqdn() is a reverse DNS lookup that can stall start-up
        # for seconds on a host whose resolver is down (the very hosts we fail over for).
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _DualStackServer(_Server6):
    dual_stack = True


class MetricsServer:
    """A running metrics endpoint. `close()` stops it and waits for its thread."""

    def __init__(self, server: _Server, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="iprotate-metrics", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound: the port is the real one when 0 was asked for."""
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    address: str, node_fn: NodeFn, now_fn: NowFn, hooks_fn: HooksFn | None = None
) -> MetricsServer:
    """Serve the node's metrics on `address` (see `parse_address`) from a background thread.

    Every path answers with the metrics (``GET /metrics`` is what Prometheus asks for). Raises
    ValueError for a malformed or unresolvable address, OSError if it cannot listen there (port
    in use, address not local)."""
    host, port = parse_address(address)
    registry = make_registry(node_fn, now_fn, hooks_fn)
    app = make_wsgi_app(registry)
    server = _bind(address, host, port, app)
    log.info("metrics: serving on %s", _format(server.socket.getsockname()))
    return MetricsServer(server, registry)


def _bind(address: str, host: str, port: int, app: Any) -> _Server:
    if not host:
        try:
            return _make(_DualStackServer, ("::", port), app)
        except OSError as e:
            if e.errno not in _NO_IPV6:
                raise
            # No IPv6 here (ipv6.disable=1, or RestrictAddressFamilies without AF_INET6): every
            # IPv4 address is what ":PORT" can still mean.
            log.debug("metrics: no dual-stack socket (%s), listening on IPv4 only", e)
            return _make(_Server, ("0.0.0.0", port), app)
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ValueError(f"metrics address {address!r}: cannot resolve {host!r}: {e}") from None
    last: OSError | None = None
    for family, _, _, _, sockaddr in infos:
        cls = _Server6 if family == socket.AF_INET6 else _Server
        try:
            return _make(cls, sockaddr, app)
        except OSError as e:
            last = e
    assert last is not None  # getaddrinfo answers with at least one address or raises
    raise last


def _make(cls: type[_Server], sockaddr: tuple[Any, ...], app: Any) -> _Server:
    server = cls(sockaddr, _Handler)
    server.set_app(app)
    return server


def _format(sockaddr: tuple[Any, ...]) -> str:
    host, port = sockaddr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
