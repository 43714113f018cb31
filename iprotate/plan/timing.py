"""CARP timing as ucarp computes it (CARP.md, "Timing"). Pure arithmetic, shared by the planner and
the state machine so the two cannot disagree."""

from __future__ import annotations

# The farewell advert: a backup that hears advbase 255 / advskew 255 takes over at once.
FAREWELL_ADVBASE = 255
FAREWELL_ADVSKEW = 255
# A master whose health check is down advertises this skew: worse than any healthy host of a plan
# (the ladder stays below it unless a VIP has 255 participants), better than a drained one (255).
SICK_ADVSKEW = 254


def interval(advbase: int, advskew: int) -> float:
    """Seconds between two adverts of a master: advbase + advskew/256."""
    return advbase + advskew / 256.0


def interval_key(advbase: int, advskew: int) -> int:
    """An integer that orders intervals exactly (shorter interval = more preferred)."""
    return advbase * 256 + advskew


def master_down(advbase: int, advskew: int, dead_ratio: int) -> float:
    """Seconds a backup waits without adverts before it takes over. The skew is not multiplied."""
    return advbase * dead_ratio + advskew / 256.0
