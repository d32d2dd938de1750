"""`nl.webhooks`: each provider's signed event webhook, by the name in its path (`/webhooks/{name}`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from ..errors import UnknownProviderError, WebhookError
from ..statuses import EventKind
from .part import Part

if TYPE_CHECKING:
    from ..webhooks.base import Receiver


class Webhooks(Part):
    @cached_property
    def receivers(self) -> dict[str, Receiver]:
        """The receiver of each provider (made once: a receiver holds its parsed verification key)."""
        from ..webhooks import receivers

        return receivers(self.config)

    def receive(self, provider: str, body: bytes, headers: Mapping[str, str], *,
                now: float | None = None) -> tuple[int, Counter[str]]:
        """Verify and record one webhook call of `provider`: (events received, counts by kind).

        UnknownProviderError for a provider with no webhook; WebhookError (before anything is read as events)
        when the signature or its time is wrong; InputError for a body that is not events.
        """
        from .. import events

        receiver = self.receivers.get(provider)
        if receiver is None:
            raise UnknownProviderError(f"no webhook for {provider!r}; there are: {', '.join(sorted(self.receivers))}")
        metrics, alerts = self._nl.monitoring.metrics, self._nl.alerts
        try:
            received, kinds = events.receive(self.store, receiver, body, headers, time.time() if now is None else now)
        except WebhookError:
            metrics.signature_failures.labels(provider).inc()
            alerts.signature_failure(provider)
            raise
        alerts.signature_ok(provider)
        for kind, count in kinds.items():
            metrics.webhook_events.labels(provider, kind).inc(count)
        if kinds.get(EventKind.BLOCKED):
            alerts.sender_wave()
        return received, kinds

