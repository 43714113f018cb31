"""The bounds of the `[run]` timing values, checked the same way in the cluster file and on the
command line of `iprotate run` (one rule, two ways in).

Every value is a finite number of seconds. NaN compares false with everything, so a bound written
as `not lo <= v <= hi` would let it through some checks and not others; infinity would make a timer
that never fires; a negative value a timer that fires before it is armed. Each bound has a why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """A value in lo..hi seconds, or exactly 0 if `zero_means` says what 0 does."""

    lo: float
    hi: float
    why: str
    zero_means: str | None = None

    def describe(self) -> str:
        span = f"{self.lo:g}..{self.hi:g} seconds"
        return f"0 ({self.zero_means}) or {span}" if self.zero_means else span


RUN_SECONDS: dict[str, Bound] = {
    # An hour is longer than any maintenance window's flapping; beyond it a returning owner would
    # look like a host that never comes back.
    "hold_down": Bound(0.0, 3600.0, "0: take VIPs back at once; at most an hour"),
    # 60 s between two VIPs is already 4 hours for 255 VIPs: more is a typo.
    "stagger": Bound(0.0, 60.0, "0: take every VIP back together; at most a minute each"),
    # Under 1 s a master floods the segment (1e-6 sent ~thousands of ARPs a second); a day is
    # longer than any ARP cache keeps an entry.
    "garp_refresh": Bound(1.0, 86400.0, "ARP caches expire in minutes", zero_means="off"),
    # Under 0.1 s no script can run; an hour-long hook is a hung hook.
    "hook_timeout": Bound(0.1, 3600.0, "a hook gets at least 0.1 s and at most an hour"),
}


def check_seconds(key: str, value: object) -> str | None:
    """Why `value` is no good for the `[run]` key `key`, or None if it is good."""
    b = RUN_SECONDS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number of seconds ({b.describe()})"
    if not math.isfinite(value):
        return f"{value!r} is not a finite number of seconds ({b.describe()})"
    if b.zero_means is not None and value == 0:
        return None
    if not b.lo <= value <= b.hi:
        return f"{value!r} is out of range: {b.describe()} ({b.why})"
    return None
