"""`nl.monitoring`: the newsletter's figures for Prometheus, shown to a scraper or written by a cron run."""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, NewsletterError
from .part import Part

if TYPE_CHECKING:
    from ..metrics import Metrics, StoreFigures
    from . import Newsletter


class Monitoring(Part):
    def __init__(self, nl: Newsletter) -> None:
        super().__init__(nl)
        self._metrics: Metrics | None = None
        self._lock = threading.Lock()

    @property
    def metrics(self) -> Metrics:
        """The figures, counted from when this newsletter was opened; what the store holds (the oldest
        pending row, each list's members, its last finished send) is read each time they are shown."""
        from ..metrics import Metrics

        with self._lock:
            if self._metrics is None:
                self._metrics = Metrics()
                self._metrics.start_at_zero(sorted(self.config.lists), self.config.provider.backend)
                self._metrics.watch_store(self._store_figures)
            return self._metrics

    def share(self, path: str | os.PathLike[str]) -> None:
        """This process's figures, left in `path` (written whole) for the first process of the same run to
        add to its own (`send --workers`: only that one writes the metrics file and pushes)."""
        from ..files import atomic_write
        from ..metrics import exposition

        atomic_write(Path(path), exposition(self.metrics.snapshot()))

    def _store_figures(self) -> StoreFigures:
        from ..ledger import last_finished, oldest_pending
        from ..metrics import StoreFigures

        return StoreFigures(oldest_pending(self.store), self.store.list_counts(), last_finished(self.store))

    def allowed(self, authorization: str) -> bool:
        """Whether an Authorization header may read /metrics: `[metrics] enabled` and the bearer token of
        `[metrics] token_env`, compared in constant time. ConfigError when that variable is not set."""
        settings = self.config.metrics
        if not settings.enabled:
            return False
        token = os.environ.get(settings.token_env, "")
        if not token:
            raise ConfigError(f"{self.config.path}: [metrics] enabled, but environment variable {settings.token_env} "
                              f"is not set (the bearer token /metrics asks for)")
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def scrape(self, authorization: str) -> tuple[bytes, str] | None:
        """The figures and their content type for a scraper that `allowed`; None for anyone else."""
        from ..metrics import CONTENT_TYPE

        return (self.metrics.text(), CONTENT_TYPE) if self.allowed(authorization) else None

    def publish(self, command: str, textfile: str | os.PathLike[str] | None = None,
                others: Sequence[str] = ()) -> list[str]:
        """What a run from cron leaves for Prometheus: the figures written to `textfile` (node_exporter's
        textfile collector, written whole) and pushed to `[metrics] pushgateway` when one is set, as
        `command`'s (send, bounces, scheduler), with `others` (the `share` of each other process of the
        same run) added in. Returns the one-line errors of what could not be done; a failure here never
        changes a send."""
        from ..metrics import combine, push, write_textfile

        problems: list[str] = []
        gateway = self.config.metrics.pushgateway
        figures = self.metrics.snapshot()  # the store read once, for the file and the push alike
        if others:
            figures = combine(figures, others)
        if textfile is not None:
            try:
                write_textfile(textfile, figures)
            except (OSError, NewsletterError) as exc:
                problems.append(f"metrics file {Path(textfile)}: {exc}")
        if gateway:
            try:
                push(gateway, self.config.metrics.job, command, figures)
            except (OSError, NewsletterError) as exc:
                problems.append(f"[metrics] pushgateway {gateway}: {exc}")
        return problems
