"""Per-person flood control: who sends faster than a person can, is answered once and then ignored
until their pace drops again.

Kept in the process's memory: a restart forgets the counts (harmless: the window is seconds
long), and with several bot processes each one counts only the updates it receives (Telegram
hands one bot's updates to one poller or one webhook, so in practice that is all of them).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

# More than LIMIT updates within WINDOW_SECONDS is faster than anyone reads the answers.
LIMIT = 20
WINDOW_SECONDS = 10.0
# Forget people idle for a window, checked every this many updates (bounds the memory).
SWEEP_EVERY = 1000


class Verdict(enum.Enum):
    ALLOW = "allow"
    WARN = "warn"  # the first update over the limit: answer once, then drop it
    DROP = "drop"  # over the limit and already told


@dataclass
class _Track:
    times: deque[float]
    warned: bool = field(default=False)


class FloodGate:
    """Counts updates per key (a person) in a sliding window; `clock` is a monotonic clock in
    seconds, injectable for tests."""

    def __init__(
        self,
        limit: int = LIMIT,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("the flood limit and window must be positive")
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._tracks: dict[Hashable, _Track] = {}
        self._checks = 0

    def check(self, key: Hashable) -> Verdict:
        now = self.clock()
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self._sweep(now)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(deque(maxlen=self.limit + 1))
        # Dropped updates count too: someone who keeps hammering stays stopped until they
        # pause for a window.
        track.times.append(now)
        over = len(track.times) > self.limit and now - track.times[0] < self.window_seconds
        if not over:
            track.warned = False
            return Verdict.ALLOW
        if track.warned:
            return Verdict.DROP
        track.warned = True
        return Verdict.WARN

    def _sweep(self, now: float) -> None:
        idle = [k for k, t in self._tracks.items() if now - t.times[-1] >= self.window_seconds]
        for key in idle:
            del self._tracks[key]

    def __len__(self) -> int:
        """How many people are being counted now."""
        return len(self._tracks)
