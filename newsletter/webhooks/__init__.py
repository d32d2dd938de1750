"""Inbound provider events: signature checks and parsing into `TrackingEvent`s, one module per provider."""

from __future__ import annotations

from ..config import Config
from .base import Receiver
from .mailgun import MailgunReceiver
from .postmark import PostmarkReceiver
from .sendgrid import SendGridReceiver
from .ses import SesReceiver


def receivers(config: Config) -> dict[str, Receiver]:
    """The webhook receiver of each provider, by the name in its path (`/webhooks/{name}`)."""
    found: list[Receiver] = [SendGridReceiver(config.sendgrid), PostmarkReceiver(config.postmark),
                             MailgunReceiver(config.mailgun), SesReceiver(config.ses)]
    return {receiver.name: receiver for receiver in found}
