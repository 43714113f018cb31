"""What every benchmark records next to its figures: the revision measured and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def revision() -> str:
    """The commit measured, and the files of iprotate/ that differ from it."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = sorted(line[3:] for line in git("status", "--porcelain", "--", "iprotate").splitlines())
    return rev + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def machine() -> str:
    """Architecture, cores and Python version."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
