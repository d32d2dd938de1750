"""Pacing shared by every batch of one send: the rate limit, pauses, and waits that a stop cuts short.

The dispatcher asks `admit(n)` before it claims a batch; a provider that is told to slow down
(SendGrid's 429, a back-off after a 5xx, an SMTP 421) calls `pause(seconds)`, which holds back
every batch, and `sleep(seconds)` for its own retries. Every wait checks the stop token at
least ten times a second, so SIGTERM during a long 429 wait ends it within a second. Its `meter`
hears of each request to the provider and each pause, for the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

StopCheck = Callable[[], bool]
StopToken = StopCheck | threading.Event | None  # what callers pass: a callable, an Event, or None for "never"
_SLICE = 0.1  # how often a wait looks at the stop token


def stop_check(stop: StopToken) -> StopCheck:
    """A stop token as a callable."""
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


class Meter(Protocol):
    """Hears what a send's provider calls did: `metrics.ProviderMeter`, or nothing."""

    def request(self, status: str, seconds: float) -> None: ...

    def throttled(self, seconds: float) -> None: ...


class _Deaf:
    def request(self, status: str, seconds: float) -> None:
        pass

    def throttled(self, seconds: float) -> None:
        pass


class Pacer:
    def __init__(self, *, max_rate: float | None = None, stop: StopCheck = lambda: False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None, meter: Meter | None = None) -> None:
        self.max_rate = max_rate
        self.meter: Meter = meter or _Deaf()
        self._should_stop = stop
        self._clock = clock
        self._sleep = sleep  # a test's stand-in for real waiting: time then moves on by what it was given
        self._offset = 0.0
        self._lock = threading.Lock()
        self._start = clock()
        self._admitted = 0
        self._resume_at = 0.0
        self._stopped = threading.Event()

    def _now(self) -> float:
        return self._clock() + self._offset

    @property
    def stopped(self) -> bool:
        """True once the stop token has said so (it is asked again here)."""
        if not self._stopped.is_set() and self._should_stop():
            self._stopped.set()
        return self._stopped.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless stopped first; False when the send is being stopped."""
        if seconds > 0 and self._sleep is not None:
            self._sleep(seconds)
            with self._lock:
                self._offset += seconds
            return not self.stopped
        deadline = self._now() + seconds
        while not self.stopped:
            left = deadline - self._now()
            if left <= 0:
                return True
            self._stopped.wait(min(_SLICE, left))
        return False

    def cap(self, rate: float) -> None:
        """Keep under `rate` messages a second from now on: a provider's own limit, read at run time."""
        with self._lock:
            if not self.max_rate or rate < self.max_rate:
                self.max_rate = rate

    def pause(self, seconds: float) -> None:
        """Hold back every batch of this send for `seconds` from now (the longest pause wins)."""
        self.meter.throttled(seconds)
        with self._lock:
            self._resume_at = max(self._resume_at, self._now() + seconds)

    def wait(self) -> bool:
        """Wait out any pause; False when the send is being stopped."""
        while True:
            with self._lock:
                left = self._resume_at - self._now()
            if left <= 0:
                return not self.stopped
            if not self.sleep(left):
                return False

    def admit(self, count: int, worth_waiting: Callable[[], bool] = lambda: True) -> bool:
        """Wait until `count` more messages keep within `max_rate` and any pause is over; False when stopping.

        `worth_waiting` is asked before a rate wait, so the end of a send is not waited for.
        """
        if not self.wait():
            return False
        if self.max_rate:
            with self._lock:
                ahead = self._admitted / self.max_rate - (self._now() - self._start)
            if ahead > 0 and worth_waiting() and not self.sleep(ahead):
                return False
        with self._lock:
            self._admitted += count
        return not self.stopped

