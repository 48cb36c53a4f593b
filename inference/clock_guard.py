"""The clock guard: a submission inside its CPU budget (Kaggle: 90 or 120 minutes, or no score at all), scored by
one ensemble from the first file to the last.

It times the first files with the whole ensemble (each member's model calls, each front end's decode and
features: :class:`WorkClock`), projects the whole folder from that pace, and keeps the longest run of members from
the first (list them best first) whose projection fits: a member it drops takes its front end with it when no
kept member shares it. When it dropped any, the probe files are scored again by the kept ensemble, so that every
file is scored by the same models. Should the budget be spent all the same (a slower machine than the probe
said), the files left get the fill value with a warning, so a valid submission is always written.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)
PROBE_FILES = 2  # files timed with the whole ensemble before the guard decides


@dataclass
class WorkClock:
    """Seconds of work per front end (input group) and per ensemble member, added from any thread."""

    groups: list[float] = field(default_factory=list)
    members: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_group(self, group: int, seconds: float) -> None:
        """``seconds`` of decode + features + windows for the input group ``group``."""
        with self.lock:
            self.groups.extend([0.0] * (group + 1 - len(self.groups)))
            self.groups[group] += seconds

    def add_member(self, member: int, seconds: float) -> None:
        """``seconds`` of model calls of the ensemble member ``member``."""
        with self.lock:
            self.members.extend([0.0] * (member + 1 - len(self.members)))
            self.members[member] += seconds


class Sheddable(Protocol):
    """What the guard needs of an ensemble (:class:`inference.predict.SoundscapePredictor` is one)."""

    clock: WorkClock

    def member_groups(self) -> list[int]:
        """The input group of each member, in order."""

    def keep_members(self, count: int) -> None:
        """Keep the first ``count`` members and only the front ends they use."""


def work_share(clock: WorkClock, member_groups: list[int], keep: int) -> float:
    """The share of the probe's measured work that the first ``keep`` members and their front ends make."""
    groups = set(member_groups[:keep])
    kept = sum(s for g, s in enumerate(clock.groups) if g in groups) + sum(clock.members[:keep])
    total = sum(clock.groups) + sum(clock.members)
    return kept / total if total > 0 else keep / max(1, len(member_groups))


@dataclass
class ClockGuard:
    """Keeps ``files`` files inside ``budget_s`` seconds counted from its creation (see the module docstring)."""

    budget_s: float
    files: int
    probe_files: int = PROBE_FILES
    t0: float = field(default_factory=time.perf_counter)
    dropped: list[int] = field(default_factory=list)  # members dropped (their positions in the full ensemble)
    announced: bool = False

    def elapsed(self) -> float:
        """Seconds since the guard started."""
        return time.perf_counter() - self.t0

    def spent(self) -> bool:
        """Whether the budget is used up."""
        return self.elapsed() > self.budget_s

    def decide(self, ensemble: Sheddable, probe_s: float, probed: int) -> int:
        """After ``probed`` files took ``probe_s`` seconds with the whole ensemble: keep the longest run of members
        from the first whose projected finish fits the budget (at least one); returns how many were dropped. The
        projection counts the probe files again when members are dropped (they are scored anew)."""
        groups = ensemble.member_groups()
        left = self.files - probed
        per_file = probe_s / max(1, probed)
        keep = len(groups)
        while keep > 1:
            again = probed if keep < len(groups) else 0
            projected = self.elapsed() + per_file * work_share(ensemble.clock, groups, keep) * (left + again)
            if projected <= self.budget_s:
                break
            keep -= 1
        dropped = len(groups) - keep
        if dropped:
            self.dropped = list(range(keep, len(groups)))
            share = work_share(ensemble.clock, groups, keep)
            ensemble.keep_members(keep)
            log.warning("clock guard: %d files with all %d members would take %.0f s of a %.0f s budget; kept the "
                        "first %d (%.0f %% of the work per file), dropped members %s with the front ends only they "
                        "used; the %d probe files are scored again so every file has the same ensemble",
                        self.files, len(groups), self.elapsed() + per_file * left, self.budget_s, keep, 100 * share,
                        ", ".join(map(str, self.dropped)), probed)
        return dropped
