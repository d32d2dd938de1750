"""A provider behind the real `Provider` interface, in memory (after anymail's test backend).

It records every batch it is handed and answers from a script, so the send loop's handling of
results, partial failures and provider errors is tested in-process without a network peer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from newsletter.config import Config
from newsletter.pacing import Pacer
from newsletter.providers import Envelope, Preview, Recipient, Result

Answer = Callable[[Sequence[Recipient]], list[Result]]


def all_sent(recipients: Sequence[Recipient]) -> list[Result]:
    return [Result(r.key, "sent", message_id=f"fake-{r.key}") for r in recipients]


class FakeProvider:
    reports_events = True

    def __init__(self, max_batch: int = 5, max_in_flight: int = 1) -> None:
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.batches: list[list[str]] = []  # the addresses of every batch handed over, in order
        self.script: deque[Answer | BaseException] = deque()
        self.closed = 0

    @property
    def sent(self) -> list[str]:
        return [email for batch in self.batches for email in batch]

    def next(self, answer: Answer | BaseException) -> None:
        """Script the answer to the next batch: a function of the recipients, or an exception to raise."""
        self.script.append(answer)

    def check(self, envelope: Envelope) -> None:
        return None

    def prepare(self, pacer: Pacer) -> None:
        return None

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        answer = self.script.popleft() if self.script else all_sent
        if isinstance(answer, BaseException):
            raise answer
        self.batches.append([r.email for r in recipients])
        return answer(recipients)

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        return [Preview(f"{envelope.rendered.slug}-fake.txt", "\n".join(r.email for r in recipients[:limit]).encode())]

    def close(self) -> None:
        self.closed += 1

    def factory(self, config: Config, *, dry_run: bool = False) -> FakeProvider:
        """A `ProviderFactory` that always hands out this provider."""
        return self
