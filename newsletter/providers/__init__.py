"""Email providers: each takes finished messages and returns one result per recipient.

A provider knows neither the store nor the ledger; `send` joins them. `create` picks the one
`config.toml` names; each backend module is imported only when chosen.
"""

from __future__ import annotations

import os

from ..config import Config
from ..errors import ConfigError, ProviderAuthError
from .base import Envelope, Preview, Provider, Recipient, Result

__all__ = ["Envelope", "Preview", "Provider", "Recipient", "Result", "create"]


def _secret(variable: str, what: str, *, required: bool) -> str:
    value = os.environ.get(variable, "")
    if required and not value:
        raise ProviderAuthError(f"environment variable {variable} is not set ({what})")
    return value


def create(config: Config, *, dry_run: bool = False) -> Provider:
    """The configured provider, its secret read from the environment (a dry run needs none)."""
    if config.provider.backend == "smtp":
        from .smtp import SmtpProvider

        settings = config.smtp
        password = _secret(settings.password_env, "SMTP password", required=not dry_run) if settings.username else ""
        return SmtpProvider(settings, password)
    if config.provider.backend == "postmark":
        from .postmark import PostmarkProvider

        token = _secret(config.postmark.server_token_env, "Postmark server token", required=not dry_run)
        return PostmarkProvider(config.postmark, token, max_in_flight=config.send.concurrency)
    if config.provider.backend == "mailgun":
        from .mailgun import MailgunProvider

        if not config.mailgun.domain:
            raise ConfigError(f"{config.path}: [mailgun] domain: required for the mailgun backend (the sending "
                              f"domain set up at Mailgun)")
        key = _secret(config.mailgun.api_key_env, "Mailgun API key", required=not dry_run)
        return MailgunProvider(config.mailgun, key, max_in_flight=config.send.concurrency)
    if config.provider.backend == "ses":
        from .ses import SesProvider, check_credentials

        if not dry_run:
            check_credentials()
        return SesProvider(config.ses, max_in_flight=config.send.concurrency)
    from .sendgrid import SendGridProvider

    api_key = _secret(config.sendgrid.api_key_env, "SendGrid API key", required=not dry_run)
    return SendGridProvider(config.sendgrid, api_key, max_in_flight=config.send.concurrency)
