"""The interface every provider implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formataddr
from typing import Literal, NamedTuple, Protocol

from ..render import Rendered

Status = Literal["sent", "failed", "unknown"]


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
    custom_args: dict[str, str] = field(default_factory=dict)  # shared by every recipient (issue, list)

    @property
    def from_header(self) -> str:
        return formataddr((self.from_name, self.from_email)) if self.from_name else self.from_email


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


class Result(NamedTuple):
    key: int
    status: Status
    message_id: str = ""
    error: str = ""


class Preview(NamedTuple):
    """One file of a dry run's preview: a name inside the output folder and its bytes."""

    name: str
    data: bytes


class Provider(Protocol):
    """Sends one batch.

    Returns one Result for each recipient it handled; a recipient without a Result was not
    sent and goes back to pending. When it must stop (ProviderError and subclasses), the
    exception's `partial` holds the Results of those it handled before.
    """

    name: str
    max_batch: int

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]: ...

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The files a dry run writes to show what `send` would hand over; sends nothing, needs no secret."""
        ...

    def close(self) -> None: ...
