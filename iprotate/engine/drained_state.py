"""The drained state that survives restarts: `{"all": bool, "vips": ["203.0.113.10", ...]}` in
`state_dir/drained-<host>.json`.

The file is ours, but a disk, an editor or a bad day can leave anything in it. What is read is
checked strictly: a file that is not exactly that shape is ignored as a whole (logged), never
guessed at (`{"all": "no"}` once drained everything, and a corrupt file crash-looped the daemon).

Both daemons (CARP mode's and BGP mode's) keep it the same way, through `path_for`,
`load_or_log`, `to_drain` and `save_or_error`: the same file, the same log lines, the same errors.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from iprotate.cluster.loader import read_bounded

log = logging.getLogger("iprotate")

MAX_BYTES = 1 << 20


class StateError(Exception):
    """The file cannot be used; the message says why."""


@dataclass(frozen=True)
class Drained:
    all: bool
    vips: tuple[IPv4Address | IPv6Address, ...]


def parse(text: str) -> Drained:
    """The drained state in `text`, or StateError."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StateError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or set(doc) - {"all", "vips"}:
        raise StateError('not {"all": true|false, "vips": [...]}')
    drain_all = doc.get("all", False)
    vips = doc.get("vips", [])
    if not isinstance(drain_all, bool):
        raise StateError(f'"all" is {drain_all!r}, not true or false')
    if not isinstance(vips, list) or not all(isinstance(v, str) for v in vips):
        raise StateError('"vips" is not a list of addresses')
    try:
        return Drained(drain_all, tuple(ip_address(v) for v in vips))
    except ValueError as e:
        raise StateError(str(e)) from None


def load(path: Path) -> Drained | None:
    """The state saved at `path`; None if there is none; StateError if it cannot be used."""
    try:
        raw = read_bounded(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(e.strerror or str(e)) from None
    try:
        return parse(raw.decode())
    except UnicodeDecodeError as e:
        raise StateError(f"not text: {e}") from None


def save(path: Path, state: Drained) -> None:
    """Write `state` atomically (a crash leaves the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    doc = {"all": state.all, "vips": [str(v) for v in state.vips]}
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, path)


def path_for(state_dir: str | None, host: str) -> Path | None:
    """Where `host`'s drained state lives in `state_dir`; None without a state_dir (nowhere)."""
    return Path(state_dir) / f"drained-{host}.json" if state_dir else None


def load_or_log(path: Path | None) -> Drained | None:
    """The state saved at `path`; None if there is none, no path, or a file that cannot be used
    (logged: the host then takes part normally, a bad file must not keep the daemon down)."""
    if path is None:
        return None
    try:
        return load(path)
    except StateError as e:
        log.error("ignoring the drained state in %s: %s", path, e)
        return None


def to_drain(
    state: Drained, known: Callable[[IPv4Address | IPv6Address], bool], unknown: str
) -> Iterator[IPv4Address | IPv6Address | None]:
    """What to drain again after a restart, each logged as it is yielded (so the caller's own
    lines follow each one): None for every VIP, else the saved VIPs that `known` accepts (the
    others are logged with `unknown`, why they are ignored)."""
    if state.all:
        log.info("still drained (every VIP): `iprotate undrain` to take part again")
        yield None
        return
    for ip in state.vips:
        if not known(ip):
            log.warning("drained state: %s %s; ignored", ip, unknown)
            continue
        log.info("%s still drained: `iprotate undrain --vip %s` to take it back", ip, ip)
        yield ip


def save_or_error(path: Path | None, state: Drained) -> str | None:
    """Save `state` at `path` (nothing without a path); what went wrong (logged), if anything."""
    if path is None:
        return None
    try:
        save(path, state)
    except OSError as e:
        log.error("cannot save the drained state to %s: %s", path, e)
        return f"cannot save the drained state to {path}: {e.strerror or e}"
    return None
