"""One exception hierarchy: every expected failure is a NewsletterError with a one-line message.

The CLI prints the message and exits with `exit_code`; anything else is a bug and keeps its traceback.
"""

from typing import Any


class NewsletterError(Exception):
    """Base of every error the operator can fix; its message is one line that says what to do."""

    exit_code = 2


class ConfigError(NewsletterError):
    """The configuration file is missing, malformed, or names an unset environment variable."""


class ContentError(NewsletterError):
    """An issue file cannot be read or parsed (front matter, encoding, links)."""


class RenderError(NewsletterError):
    """A template or the MJML it produces is broken."""


class StoreError(NewsletterError):
    """The subscriber store refused an operation (unknown list, unknown address, bad schema)."""


class StoreUnavailable(StoreError):
    """The database stayed unreachable (or its disk full) for longer than `[store] retry_for`."""

    exit_code = 1


class UnknownListError(StoreError):
    """A list name that `config.toml` does not declare."""


class InputError(NewsletterError):
    """Operator input such as a CSV file or an address is unusable."""


class FieldError(InputError):
    """A subscriber field that is refused (too long, a control character); `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field  # "name" or "attributes"


class TokenError(NewsletterError):
    """A signed token is forged, altered, expired, or cannot be made without a secret."""


class LinkExpired(TokenError):
    """A genuine confirmation link past its time; `list_name` is the list it was for."""

    def __init__(self, message: str, list_name: str) -> None:
        super().__init__(message)
        self.list_name = list_name


class WebhookError(NewsletterError):
    """A provider webhook call that cannot be trusted: bad or missing signature, or too old."""


class UnknownProviderError(InputError):
    """A provider name (in a webhook's path) that has no receiver here."""


class SendError(NewsletterError):
    """A send could not go ahead or did not finish; the ledger says exactly where it stopped."""


class LockedError(NewsletterError):
    """Another process holds a lock this one needs (only one scheduler may run on a store)."""


class ProviderError(SendError):
    """The email provider refused or failed in a way that stops the whole send.

    `partial` holds the results of recipients the provider did handle before it stopped, so
    that they are recorded and never sent again.
    """

    def __init__(self, message: str, partial: list[Any] | None = None, *, status: int | str = "") -> None:
        super().__init__(message)
        self.partial: list[Any] = partial or []  # the providers' Results
        self.status = str(status)  # the provider's answer (an HTTP code), for the metrics; "" when none


class ProviderRejected(ProviderError):
    """The provider refused the whole request, naming no recipient: the send stops, nobody is marked failed."""

    exit_code = 1


class ProviderAuthError(ProviderError):
    """The provider rejected the credentials: nothing was sent and nothing is marked failed."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, kept failing, or stopped answering HTTP: the send stops.

    A batch it never took stays pending for the next run; one it may have taken is unknown."""

    exit_code = 1
