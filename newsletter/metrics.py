"""One newsletter's figures for Prometheus, in a registry of its own (never the process-wide default).

Names follow Prometheus's conventions: a unit in the name, `_total` on counters. Labels are only
what is bounded by the config (a list, a provider, an outcome, a status code, an event type):
never an address, a subscriber or an issue slug. `serve` shows them at `/metrics`; a `send` from
cron, which ends before anything could scrape it, writes them for node_exporter's textfile
collector or pushes them to a Pushgateway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST as CONTENT_TYPE,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    push_to_gateway,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__

__all__ = ["CONTENT_TYPE", "Metrics", "ProviderMeter", "StoreFigures", "combine", "exposition", "push",
           "write_textfile"]

# Seconds: from a loopback answer to a provider on a bad day (its timeouts are 30 s by default).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Label values known in advance (see `Metrics.start_at_zero`).
DELIVERY_OUTCOMES = ("sent", "failed", "unknown", "skipped", "deferred")  # a send run's counts
SEND_OUTCOMES = ("complete", "problems", "pending", "error")  # how a send run ended
SUBSCRIPTION_ACTIONS = ("subscribe", "confirm", "unsubscribe")


@dataclass(frozen=True)
class StoreFigures:
    """What the store holds, read each time the figures are shown: it is the same whichever process
    shows them, so a cron run's file keeps it when that run itself did nothing."""

    oldest_pending: float | None  # the Unix time of the oldest row that may go now; None: none waits
    members: Mapping[str, Mapping[str, int]]  # list -> status -> count, with "suppressed" among them
    last_finished: Mapping[str, float]  # list -> the Unix time its newest finished issue send ended


class _FromStore(Collector):
    """The store's figures as gauges. A store that is away leaves these out, not every figure."""

    def __init__(self, read: Callable[[], StoreFigures]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        try:
            figures = self._read()
        except Exception:  # noqa: BLE001 - whatever the store's driver raises, the other figures still go out
            return
        age = GaugeMetricFamily("newsletter_oldest_pending_age_seconds",
                                "Age of the oldest delivery row still waiting to be sent (0: none waits)")
        oldest = figures.oldest_pending
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest))
        members = GaugeMetricFamily("newsletter_list_members", "Members of each list by status",
                                    labels=["list", "status"])
        suppressed = GaugeMetricFamily("newsletter_list_members_suppressed", "Active members whose address "
                                       "is suppressed, so never mailed", labels=["list"])
        for list_name, by_status in figures.members.items():
            for status, count in by_status.items():
                if status == "suppressed":
                    suppressed.add_metric([list_name], count)
                else:
                    members.add_metric([list_name, status], count)
        finished = GaugeMetricFamily("newsletter_send_last_finished_timestamp_seconds", "When the newest "
                                     "finished send of an issue to the list ended", labels=["list"])
        for list_name, at in figures.last_finished.items():
            finished.add_metric([list_name], at)
        yield from (age, members, suppressed, finished)


class ProviderMeter:
    """What a send's pacer reports of one provider: each request's status and time, each throttle wait."""

    def __init__(self, metrics: Metrics, provider: str) -> None:
        self._metrics, self._provider = metrics, provider

    def request(self, status: str, seconds: float) -> None:
        self._metrics.provider_requests.labels(self._provider, status).inc()
        self._metrics.provider_latency.labels(self._provider).observe(seconds)

    def throttled(self, seconds: float) -> None:
        self._metrics.throttles.labels(self._provider).inc()
        self._metrics.throttle_wait.labels(self._provider).inc(max(0.0, seconds))


class Metrics:
    """Every figure the newsletter keeps, counted from when this object was made."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.deliveries = Counter("newsletter_deliveries", "Deliveries by outcome (sent, failed, unknown, deferred, "
                                  "skipped)", ["list", "provider", "outcome"], registry=registry)
        self.provider_requests = Counter("newsletter_provider_requests", "Requests to the provider by the status "
                                         "it answered (an HTTP or SMTP code; none: no answer)",
                                         ["provider", "status"], registry=registry)
        self.provider_latency = Histogram("newsletter_provider_request_duration_seconds", "Time of one request to "
                                          "the provider", ["provider"], buckets=LATENCY_BUCKETS, registry=registry)
        self.throttles = Counter("newsletter_provider_throttles", "Times the provider said to slow down or a "
                                 "request is tried again later", ["provider"], registry=registry)
        self.throttle_wait = Counter("newsletter_provider_throttle_wait_seconds", "Seconds every batch was held "
                                     "back for it", ["provider"], registry=registry)
        self.webhook_events = Counter("newsletter_webhook_events", "Provider events received, by type",
                                      ["provider", "type"], registry=registry)
        self.signature_failures = Counter("newsletter_webhook_signature_failures", "Webhook calls refused for a "
                                          "wrong signature or time", ["provider"], registry=registry)
        self.subscriptions = Counter("newsletter_subscription_changes", "Subscribe requests, confirmations and "
                                     "unsubscribes", ["list", "action"], registry=registry)
        self.mailbox_runs = Counter("newsletter_bounce_mailbox_runs", "Reads of the bounce mailbox",
                                    ["outcome"], registry=registry)
        self.mailbox_messages = Counter("newsletter_bounce_mailbox_messages", "Messages read from the bounce "
                                        "mailbox, by class", ["class"], registry=registry)
        self.send_runs = Counter("newsletter_send_runs", "Send runs by how they ended (complete, problems, "
                                 "pending, error)", ["list", "outcome"], registry=registry)
        self.http_requests = Counter("newsletter_http_requests", "Requests to the web app by its route's pattern, "
                                     "method and status", ["route", "method", "status"], registry=registry)
        self.http_latency = Histogram("newsletter_http_request_duration_seconds", "Time the web app took to answer "
                                      "one request", ["route"], registry=registry)
        Info("newsletter_build", "The running version", registry=registry).info({"version": __version__})
        self.last_send = Gauge("newsletter_send_last_end_timestamp_seconds", "When a send run to the list last "
                               "ended", ["list"], registry=registry)

    def start_at_zero(self, lists: Iterable[str], provider: str) -> None:
        """The series whose label values are known in advance, there at 0 before anything happens: a
        counter that first appears at 1 shows no increase to rate() or increase() (Prometheus's advice)."""
        for name in lists:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(name, provider, outcome)
            for outcome in SEND_OUTCOMES:
                self.send_runs.labels(name, outcome)
            for action in SUBSCRIPTION_ACTIONS:
                self.subscriptions.labels(name, action)

    def meter(self, provider: str) -> ProviderMeter:
        return ProviderMeter(self, provider)

    def watch_store(self, read: Callable[[], StoreFigures]) -> None:
        """Report what the store holds, `read()` each time the figures are shown."""
        self.registry.register(_FromStore(read))

    def delivered(self, list_name: str, provider: str, outcomes: Mapping[str, int]) -> None:
        for outcome, count in outcomes.items():
            if count:
                self.deliveries.labels(list_name, provider, outcome).inc(count)

    def send_ended(self, list_name: str, outcome: str) -> None:
        self.send_runs.labels(list_name, outcome).inc()
        self.last_send.labels(list_name).set_to_current_time()

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request to the web app: `route` is its pattern (`/unsubscribe/{token}`), never the path sent."""
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        """The figures in Prometheus's text format, as `/metrics` answers."""
        return generate_latest(self.registry)

    def snapshot(self) -> list[Metric]:
        """The figures as they are now, the store's read once: what a run writes and pushes alike."""
        return list(self.registry.collect())


def write_textfile(path: str | os.PathLike[str], figures: list[Metric]) -> Path:
    """Figures (a `Metrics.snapshot`) for node_exporter's textfile collector, written whole or not at
    all. Each series carries `file` (the file's name): node_exporter reads every file in its folder
    as one, and a series that two files both hold (two runs' files side by side) is an error there."""
    from .files import atomic_write

    target = Path(path)
    atomic_write(target, generate_latest(_registry_of(figures, {"file": target.name})))
    return target


def push(gateway: str, job: str, command: str, figures: list[Metric], timeout: float = 10.0) -> None:
    """Figures (a `Metrics.snapshot`) to a Pushgateway, replacing what this job's `command` (send,
    bounces, scheduler) pushed last: the Pushgateway's grouping key keeps each command's apart."""
    push_to_gateway(gateway, job=job, grouping_key={"command": command}, registry=_registry_of(figures),
                    timeout=timeout)


def exposition(figures: list[Metric]) -> bytes:
    """Figures in Prometheus's text format, as they are: what one process of a send hands the first
    (see `combine`)."""
    return generate_latest(_registry_of(figures))


def combine(figures: list[Metric], others: Iterable[str]) -> list[Metric]:
    """This process's figures with those of the other processes of the same run (`send --workers`, each
    its `exposition`) added in: counters and histograms summed, every other series (the gauges: times,
    what the store holds) its largest value, and a series' creation time its earliest."""
    from prometheus_client.parser import text_string_to_metric_families

    kept = {f.name: Metric(f.name, f.documentation, f.type, f.unit) for f in figures}
    series: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {
        f.name: {(x.name, tuple(sorted(x.labels.items()))): x.value for x in f.samples} for f in figures}
    owner = {x.name: f.name for f in figures for x in f.samples}  # an info's family is named apart from its sample
    for text in others:
        for family in text_string_to_metric_families(text):
            summed = family.type in ("counter", "histogram", "summary")
            for x in family.samples:
                name = owner.setdefault(x.name, family.name)
                kept.setdefault(name, Metric(family.name, family.documentation, family.type, family.unit))
                values, key = series.setdefault(name, {}), (x.name, tuple(sorted(x.labels.items())))
                if key not in values:
                    values[key] = x.value
                elif x.name.endswith("_created"):
                    values[key] = min(values[key], x.value)
                else:
                    values[key] = values[key] + x.value if summed else max(values[key], x.value)
    for name, family in kept.items():
        for (sample, labels), number in series.get(name, {}).items():
            family.add_sample(sample, dict(labels), number)
    return list(kept.values())


class _Fixed(Collector):
    """Families already collected, each series with `labels` added."""

    def __init__(self, families: list[Metric], labels: Mapping[str, str]) -> None:
        self._families, self._labels = families, dict(labels)

    def collect(self) -> Iterable[Metric]:
        for family in self._families:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [sample._replace(labels={**sample.labels, **self._labels}) for sample in family.samples]
            yield copy


def _registry_of(families: list[Metric], labels: Mapping[str, str] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Fixed(families, labels or {}))
    return registry
