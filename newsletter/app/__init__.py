"""The front door: `Newsletter(config)` is what the CLI, the scheduler and the web app call.

It holds the config, the store (opened on first use) and the provider factory, and one part per
domain, each in its own module: `issues`, `subscribers`, `sends`, `schedule`, `links`,
`webhooks`, `bounces`, `welcome`, `monitoring` and `alerts`. It keeps no process-wide state: stopping a send is a token
passed in, and several `Newsletter` objects can live side by side in one process.

    from newsletter import Newsletter

    with Newsletter.from_config("config.toml") as nl:
        report = nl.sends.send("issues/2026-12-01.md", "weekly")
        print(report.summary())
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

from ..config import CONFIG_ENV, Config, ListSettings, load, locate as locate_config, missing as missing_config
from ..consent import STATUSES
from ..errors import NewsletterError
from ..statuses import Delivery, EventKind, Membership
from ..systemd import ENVIRONMENT_FILE
from .alerts import Alerts
from .bounces import Bounces
from .issues import Issues
from .links import LinkedMembership, Links, Preferences, PreferencesSaved, SubscribeRequest
from .monitoring import Monitoring
from .schedule import DueRun, Schedule, ScheduledRun, Timetable
from .sends import Sends, SendStatus
from .subscribers import Subscribers
from .webhooks import Webhooks
from .welcome import Welcome, WelcomeRun

# Each operation imports the modules it needs when it runs, so that a command starts quickly
# and `send` never loads the web app or the scheduler (or `serve` the CSV code).
if TYPE_CHECKING:
    from ..archive import ArchivedIssue
    from ..compat import Report
    from ..providers import Provider
    from ..report import IssueReport
    from ..schedule import DuePlan
    from ..send import DryRunReport, Mailing, SendReport
    from ..store import Store
    from ..templates import init_project

__all__ = [
    "CONFIG_ENV",
    "ENVIRONMENT_FILE",
    "STATUSES",
    "Alerts",
    "ArchivedIssue",
    "Bounces",
    "Delivery",
    "DryRunReport",
    "DuePlan",
    "DueRun",
    "EventKind",
    "IssueReport",
    "Issues",
    "LinkedMembership",
    "Links",
    "ListSettings",
    "Mailing",
    "Membership",
    "Monitoring",
    "Newsletter",
    "Preferences",
    "PreferencesSaved",
    "Report",
    "Schedule",
    "ScheduledRun",
    "SendReport",
    "SendStatus",
    "Sends",
    "SubscribeRequest",
    "Subscribers",
    "Timetable",
    "Webhooks",
    "Welcome",
    "WelcomeRun",
    "init_project",
    "locate_config",
    "missing_config",
]

# Names that live with their module, loaded when first asked for: `send` must not import the
# scheduler, nor `serve` the send path, nor anything Jinja2 before it renders.
_LAZY = (("DryRunReport", "send"), ("SendReport", "send"), ("Mailing", "send"), ("DuePlan", "schedule"),
         ("IssueReport", "report"), ("Report", "compat"), ("ArchivedIssue", "archive"), ("init_project", "templates"))


def __getattr__(name: str) -> Any:
    module = dict(_LAZY).get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"..{module}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProviderFactory(Protocol):
    """Makes the provider for a send; `providers.create` is the default, tests pass their own."""

    def __call__(self, config: Config, *, dry_run: bool = False) -> Provider: ...


def _create_provider(config: Config, *, dry_run: bool = False) -> Provider:
    """`providers.create`, imported when a send first needs it: cron's `send --due` mostly finds
    nothing due and needs no provider."""
    from ..providers import create

    return create(config, dry_run=dry_run)


class Newsletter:
    """One newsletter, as `config.toml` describes it: issues, subscribers, sends, schedule, links, webhooks,
    bounces, welcome mails, metrics, alerts."""

    def __init__(self, config: Config, *, provider_factory: ProviderFactory | None = None) -> None:
        self.config = config
        self._provider_factory: ProviderFactory = provider_factory or _create_provider
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self.issues = Issues(self)
        self.subscribers = Subscribers(self)
        self.sends = Sends(self)
        self.schedule = Schedule(self)
        self.links = Links(self)
        self.webhooks = Webhooks(self)
        self.bounces = Bounces(self)
        self.welcome = Welcome(self)
        self.monitoring = Monitoring(self)
        self.alerts = Alerts(self)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, *,
                    provider_factory: ProviderFactory | None = None) -> Newsletter:
        """Load `path` (else $NEWSLETTER_CONFIG, else ./config.toml) and open the newsletter it describes."""
        return cls(load(path), provider_factory=provider_factory)

    @property
    def store(self) -> Store:
        """The subscriber store, opened (and its schema upgraded) on first use."""
        from ..store import Store

        with self._store_lock:
            if self._store is None:
                self._store = Store(self.config)
            return self._store

    def provider(self, *, dry_run: bool = False) -> Provider:
        """The configured provider (with its secret from the environment, unless a dry run); the caller closes it."""
        return self._provider_factory(self.config, dry_run=dry_run)

    def healthy(self) -> bool:
        """The store answers: what a load balancer's or orchestrator's health check asks."""
        return self.store.reachable()

    def explain(self, exc: BaseException) -> NewsletterError | None:
        """An exception from below that is the infrastructure's doing (a database away, a full disk), as
        the one-line error a face shows; None for anything else, which is a bug."""
        from ..sql import transient

        if self._store is not None and transient(exc):
            return self._store.unavailable(exc)
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Newsletter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
