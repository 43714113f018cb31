"""The drained state that survives restarts: `{"all": bool, "vips": ["203.0.113.10", ...]}` in
`state_dir/drained-<host>.json`.

The file is ours, but a disk, an editor or a bad day can leave anything in it. What is read is
checked strictly: a file that is not exactly that shape is ignored as a whole (logged by the
caller), never guessed at (`{"all": "no"}` once drained everything, and a corrupt file
crash-looped the daemon).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from iprotate.cluster.loader import read_bounded

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
