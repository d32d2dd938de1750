"""What every HTTP provider does between its calls: wait for the pacer, try, and after a refusal worth
trying again pause every batch of the send, up to a number of tries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ProviderUnavailable
from ..pacing import Pacer

T = TypeVar("T")


class MaybeSent(Exception):
    """The request went out and no usable answer came back: the provider may have taken it, so each of
    its recipients is unknown and the request is never sent again unasked."""

    status = "none"  # what the metrics count it as: no answer

    def __init__(self, message: str, *, stop: bool = False) -> None:
        super().__init__(message)
        self.stop = stop  # the send cannot go on (the answers are not HTTP at all)


class Retry(Exception):
    """A refusal worth trying again (a 429, a 5xx, a connection never made): `message` is what is said
    once the tries run out; `wait` replaces the back-off when the provider says how long; `status` is
    the answer's code ("none" for a connection never made)."""

    def __init__(self, message: str, wait: float | None = None, *, status: int | str = "none") -> None:
        super().__init__(message)
        self.message, self.wait, self.status = message, wait, str(status)


def backoff(base: float, attempt: int) -> float:
    """`base` doubled per attempt, at most a minute, with jitter so that parallel batches spread out."""
    return float(min(60.0, base * 2 ** attempt) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret


def with_retries(call: Callable[[], T], pacer: Pacer, *, provider: str, tries: int, base: float,
                 ok: int = 200) -> T | None:
    """`call()`'s result, trying again after each Retry (the pause holds every batch of the send);
    None when the send is stopping. ProviderUnavailable once `tries` are used up: the batch stays pending.

    Each call's time and answer go to the pacer's meter: `ok` on success, else the exception's `status`
    (its HTTP code; "none" for no answer; "refused" when it has none)."""
    last = ""
    for attempt in range(tries):
        if not pacer.wait():
            return None
        started = time.monotonic()
        status = "refused"
        try:
            result = call()
            status = str(ok)
            return result
        except Retry as again:
            status = again.status
            last = again.message
            pacer.pause(again.wait if again.wait is not None else backoff(base, attempt))
        except Exception as refused:
            status = getattr(refused, "status", "") or "refused"  # MaybeSent's "none", a refusal's HTTP code
            raise
        finally:
            pacer.meter.request(status, time.monotonic() - started)
    raise ProviderUnavailable(f"{provider} failed {tries} times (last: {last}); the batch stays pending, run send "
                              f"again")
