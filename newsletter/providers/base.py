"""The interface every provider implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formataddr
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from ..pacing import Pacer

if TYPE_CHECKING:
    from ..render import Rendered

# sent: accepted; failed: refused for good; unknown: handed over, outcome not known;
# deferred: refused for now (a 4xx), to be tried again in a later run.
Status = Literal["sent", "failed", "unknown", "deferred"]


@dataclass(frozen=True)
class Envelope:
    """What every recipient of one send shares: the rendered issue and its sender headers."""

    rendered: Rendered
    from_email: str
    from_name: str
    reply_to: str
    list_id: str  # the List-Id header value, e.g. "Weekly <weekly.news.example.com>"
    category: str  # the issue slug
    subject_prefix: str = ""  # "[TEST] " for test copies
    unsubscribe_mailto: str = ""  # also offer unsubscribing by mail to this address
    custom_args: dict[str, str] = field(default_factory=dict)  # shared by every recipient (issue, list)
    feedback_id: str = ""  # Gmail's Feedback-ID: issue, list, mail type, sender (SMTP sends it)
    complaint_address: str = ""  # RFC 9477 CFBL-Address, where feedback-loop complaint reports go

    @property
    def from_header(self) -> str:
        return formataddr((self.from_name, self.from_email)) if self.from_name else self.from_email


def list_unsubscribe(envelope: Envelope, url: str) -> str:
    """The List-Unsubscribe value: the one-click link, and a mailto: when one is configured."""
    link = f"<{' '.join(url.split())}>"
    if not envelope.unsubscribe_mailto:
        return link
    return f"<mailto:{envelope.unsubscribe_mailto}?subject=unsubscribe>, {link}"


class Recipient(NamedTuple):
    """One recipient: `key` is opaque to the provider and comes back in its Result.

    (Recipients and Results are tuples: a send makes a million of each.)
    """

    key: int
    email: str
    name: str
    values: dict[str, str]  # placeholder values, plain (see `placeholders`)
    unsubscribe_url: str
    custom_args: dict[str, str] = {}  # noqa: RUF012 - never mutated; this recipient's own, added to the envelope's
    return_path: str = ""  # the envelope sender for this message (a VERP address), when not the From address


class Result(NamedTuple):
    key: int
    status: Status
    message_id: str = ""
    error: str = ""
    retry_in: float = 0.0  # for deferred results: seconds before it is worth trying again
    inactive: bool = False  # failed because the provider holds the address as inactive (bounced, complained)


class Preview(NamedTuple):
    """One file of a dry run's preview: a name inside the output folder and its bytes."""

    name: str
    data: bytes


class Provider(Protocol):
    """Sends batches; several may be in flight at once (up to `max_in_flight`), each in its own thread.

    `send` returns one Result for each recipient it handled; a recipient without a Result was
    not handed over and goes back to pending. When it must stop (ProviderError and subclasses),
    the exception's `partial` holds the Results of those it handled before. Waits (rate limits,
    back-off) go through `pacer`, shared by every batch of the send, so that a pause holds all of
    them and a stop cuts every wait short.
    """

    max_batch: int
    max_in_flight: int
    reports_events: bool  # whether delivery events (delivered, bounced, opened…) come back from it

    def check(self, envelope: Envelope) -> None:
        """Raise ProviderError when this message can never be sent (too large): before anything is sent."""
        ...

    def prepare(self, pacer: Pacer) -> None:
        """Before the first batch of a send: read the account's own limits into the pacer (SES's rate),
        or raise ProviderError when the account cannot send now. Most providers have nothing to read."""
        ...

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        ...

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The files a dry run writes to show what `send` would hand over; sends nothing, needs no secret."""
        ...

    def close(self) -> None: ...
