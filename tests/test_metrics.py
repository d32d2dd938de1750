"""Metrics: what a cron run leaves for node_exporter or a Pushgateway, and `/metrics` of a running serve."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

import newsletter
from newsletter import config as config_mod
from newsletter.app import Newsletter
from newsletter.errors import ConfigError
from newsletter.web import create_app

from .conftest import ROOT, SECRET, ready_sample, wait_for, write_config
from .smtp_server import free_port
from .webhelpers import Served, WebhookSigner, samples

SAMPLE = ROOT / "subscribers" / "sample.csv"
TOKEN = "scrape-token-for-tests"


def file_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a metrics file, each of which must carry the file's name (node_exporter reads a
    folder of them as one), without that label."""
    found = samples(path.read_text())
    assert found and all(("file", path.name) in labels for _name, labels in found)
    return {(name, tuple(pair for pair in labels if pair[0] != "file")): v for (name, labels), v in found.items()}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_metrics_file_of_a_send_holds_its_counts(sg_run, sendgrid_server, tmp_path):
    issue = ready_sample(tmp_path)
    assert sg_run("subscribers", "import", SAMPLE, "--list", "weekly").exit_code == 0
    sendgrid_server.answer_next(429, {"X-RateLimit-Reset": str(int(time.time()))})
    sendgrid_server.answer_next(503)
    target = tmp_path / "textfile" / "newsletter.prom"
    result = sg_run("send", issue, "--list", "weekly", "--yes", "--metrics-file", target)
    assert result.exit_code == 0, result.output
    text = target.read_text()
    found = file_samples(target)
    sent = len(sendgrid_server.received)
    assert sent == 12
    assert value(found, "newsletter_deliveries_total", list="weekly", provider="sendgrid", outcome="sent") == sent
    assert value(found, "newsletter_provider_requests_total", provider="sendgrid", status="429") == 1
    assert value(found, "newsletter_provider_requests_total", provider="sendgrid", status="503") == 1
    assert value(found, "newsletter_provider_requests_total", provider="sendgrid", status="202") == 1
    assert value(found, "newsletter_provider_request_duration_seconds_count", provider="sendgrid") == 3
    assert value(found, "newsletter_provider_throttles_total", provider="sendgrid") == 2
    assert value(found, "newsletter_provider_throttle_wait_seconds_total", provider="sendgrid") > 0
    assert value(found, "newsletter_send_runs_total", list="weekly", outcome="complete") == 1
    assert value(found, "newsletter_send_last_end_timestamp_seconds", list="weekly") == pytest.approx(time.time(),
                                                                                                    abs=60)
    assert ("newsletter_oldest_pending_age_seconds", ()) in found
    assert value(found, "newsletter_oldest_pending_age_seconds") == 0
    assert value(found, "newsletter_list_members", list="weekly", status="active") == 12
    assert value(found, "newsletter_list_members", list="weekly", status="unsubscribed") == 0
    assert value(found, "newsletter_list_members_suppressed", list="weekly") == 0
    assert value(found, "newsletter_build_info", version=newsletter.__version__) == 1
    finished = value(found, "newsletter_send_last_finished_timestamp_seconds", list="weekly")
    assert finished == pytest.approx(time.time(), abs=60)
    # Labels are bounded: no address, no subscriber, no issue slug.
    assert "@" not in text and issue.stem not in text
    assert not list(target.parent.glob(".*"))  # written whole: no temporary file left beside it
    # The next cron minute sends nothing and its file replaces this one: what the store knows stays in it.
    result = sg_run("send", "--due", "--list", "weekly", "--metrics-file", target)
    assert result.exit_code == 0, result.output
    later = file_samples(target)
    assert value(later, "newsletter_send_last_finished_timestamp_seconds", list="weekly") == finished
    assert value(later, "newsletter_list_members", list="weekly", status="active") == 12
    assert later[("newsletter_send_runs_total", (("list", "weekly"), ("outcome", "complete")))] == 0  # per run


def test_series_a_rule_would_read_are_there_at_zero_before_anything_happens(sg_run, tmp_path):
    """A counter that first appears at 1 shows no increase to rate() or increase(): the first failed
    send or confirmation would be missed. Label values known in advance start at 0."""
    target = tmp_path / "newsletter.prom"
    assert sg_run("send", "--due", "--list", "weekly", "--metrics-file", target).exit_code == 0
    found = file_samples(target)
    for outcome in ("sent", "failed", "unknown", "skipped", "deferred"):
        key = ("newsletter_deliveries_total", (("list", "weekly"), ("outcome", outcome), ("provider", "sendgrid")))
        assert found[key] == 0
    for outcome in ("complete", "problems", "pending", "error"):
        assert found[("newsletter_send_runs_total", (("list", "weekly"), ("outcome", outcome)))] == 0
    for action in ("subscribe", "confirm", "unsubscribe"):
        assert found[("newsletter_subscription_changes_total", (("action", action), ("list", "weekly")))] == 0


def test_a_send_stopped_with_rows_pending_says_so_and_how_long_they_waited(sg_run, tmp_path):
    issue = ready_sample(tmp_path)
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    target = tmp_path / "newsletter.prom"
    assert sg_run("send", issue, "--list", "weekly", "--yes", "--limit", "4", "--metrics-file", target).exit_code == 3
    found = file_samples(target)
    assert value(found, "newsletter_deliveries_total", list="weekly", provider="sendgrid", outcome="sent") == 4
    assert value(found, "newsletter_send_runs_total", list="weekly", outcome="pending") == 1
    assert ("newsletter_oldest_pending_age_seconds", ()) in found  # 8 rows wait, from when the send started
    assert value(found, "newsletter_oldest_pending_age_seconds") > 0
    assert not any(name == "newsletter_send_last_finished_timestamp_seconds" for name, _ in found)


def test_a_failing_send_still_writes_its_metrics_file(sg_run, sendgrid_server, tmp_path):
    """A provider that refuses the key ends the send with an error: the file says so, for the alert rule."""
    issue = ready_sample(tmp_path)
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    sendgrid_server.answer_next(401)
    target = tmp_path / "newsletter.prom"
    result = sg_run("send", issue, "--list", "weekly", "--yes", "--metrics-file", target)
    assert result.exit_code != 0
    found = file_samples(target)
    assert value(found, "newsletter_send_runs_total", list="weekly", outcome="error") == 1
    assert value(found, "newsletter_provider_requests_total", provider="sendgrid", status="401") == 1


def test_a_metrics_file_that_cannot_be_written_is_a_warning_not_a_failed_send(sg_run, sendgrid_server, tmp_path):
    issue = ready_sample(tmp_path)
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = sg_run("send", issue, "--list", "weekly", "--yes", "--metrics-file", blocker / "newsletter.prom")
    assert result.exit_code == 0
    assert "warning: metrics file" in result.output and "newsletter.prom" in result.output
    assert len(sendgrid_server.received) == 12


def test_each_command_pushes_its_own_group_to_the_pushgateway(sg_config, sg_run, tmp_path, pushgateway):
    """A send and a bounce fetch from cron push to one job: each replaces only its own figures."""
    sg_config.write_text(sg_config.read_text() + f'\n[metrics]\npushgateway = "{pushgateway.url}"\njob = "weekly"\n')
    issue = ready_sample(tmp_path)
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert sg_run("bounces", "fetch").exit_code == 2  # no mailbox is set: an error run pushes too
    groups = pushgateway.groups()
    assert set(groups) == {("weekly", "send"), ("weekly", "bounces")}
    assert value(groups[("weekly", "send")], "newsletter_deliveries_total", list="weekly", provider="sendgrid",
                 outcome="sent") == 12
    assert value(groups[("weekly", "bounces")], "newsletter_list_members", list="weekly", status="active") == 12
    assert value(groups[("weekly", "bounces")], "newsletter_deliveries_total", list="weekly", provider="sendgrid",
                 outcome="sent") == 0


def test_a_pushgateway_that_is_not_an_address_is_a_config_error(tmp_path):
    path = write_config(tmp_path, '\n[metrics]\npushgateway = "localhost:9091"\n')
    with pytest.raises(ConfigError, match=r"\[metrics\] pushgateway: 'localhost:9091' is not an http\(s\) address"):
        config_mod.load(path)


def _metrics_config(tmp_path: Path, signer: WebhookSigner, port: int, smtp_port: int) -> Path:
    path = write_config(tmp_path, "\n[metrics]\nenabled = true\n", base_url=f"http://127.0.0.1:{port}",
                        backend="smtp", smtp_port=smtp_port)
    path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"'))
    return path


def _get(url: str, path: str, token: str | None = None) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    return response.status, response.read().decode()


def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def _subscribe(url: str, email: str) -> None:
    """The subscribe form, as a browser fills it in: its CSRF cookie and field, then the post."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/subscribe/weekly")
    response = conn.getresponse()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', response.read().decode()).group(1)
    assert _post(url, "/subscribe/weekly", urllib.parse.urlencode({"email": email, "csrf": csrf}).encode(),
                 {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}) == 200


def test_metrics_of_a_running_serve_answer_only_its_token(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_METRICS_TOKEN", TOKEN)
    signer, port = WebhookSigner(), free_port()
    path = _metrics_config(tmp_path, signer, port, smtp[0].port)
    events = json.dumps([{"email": "someone@example.com", "timestamp": int(time.time()), "event": "delivered",
                          "sg_event_id": "evt-1", "sg_message_id": "m1.filter", "issue": "2026-12-01",
                          "list": "weekly", "subscriber": "1"}]).encode()
    with Served(path, port) as server:
        assert _get(server.url, "/metrics")[0] == 401
        assert _get(server.url, "/metrics", "wrong-token")[0] == 401
        status, before = _get(server.url, "/metrics", TOKEN)
        assert status == 200
        _subscribe(server.url, "new.reader@example.com")
        assert _post(server.url, "/webhooks/sendgrid", events, signer.headers(events)) == 200
        forged = WebhookSigner().headers(events)
        assert _post(server.url, "/webhooks/sendgrid", events, forged) in (401, 403)
        assert _get(server.url, "/wp-login.php")[0] == 404
        assert _get(server.url, "/unsubscribe/not-a-real-token")[0] == 400
        assert _post(server.url, "/healthz", b"", {}) == 405
        brew = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        brew.request("BREW", "/healthz")
        assert brew.getresponse().status == 405
        status, after = _get(server.url, "/metrics", TOKEN)
    found = samples(after)
    assert value(samples(before), "newsletter_subscription_changes_total", list="weekly", action="subscribe") == 0
    assert value(found, "newsletter_subscription_changes_total", list="weekly", action="subscribe") == 1
    # The members' gauges are read from the store at each scrape: the request is one more unconfirmed member.
    assert value(found, "newsletter_list_members", list="weekly", status="unconfirmed") == value(
        samples(before), "newsletter_list_members", list="weekly", status="unconfirmed") + 1
    assert value(found, "newsletter_webhook_events_total", provider="sendgrid", type="delivered") == 1
    assert value(found, "newsletter_webhook_signature_failures_total", provider="sendgrid") == 1
    assert ("newsletter_oldest_pending_age_seconds", ()) in found
    # Requests by route (its pattern, never the path a client sent), method and status.
    requests = {labels: v for (name, labels), v in found.items() if name == "newsletter_http_requests_total"}
    assert value(found, "newsletter_http_requests_total", route="/webhooks/{provider}", method="POST",
                 status="200") == 1
    assert value(found, "newsletter_http_requests_total", route="/metrics", method="GET", status="401") == 2
    assert value(found, "newsletter_http_requests_total", route="other", method="GET", status="404") == 1
    assert value(found, "newsletter_http_requests_total", route="/unsubscribe/{token}", method="GET",
                 status="400") == 1
    assert value(found, "newsletter_http_requests_total", route="/healthz", method="POST", status="405") == 1
    assert value(found, "newsletter_http_requests_total", route="/healthz", method="other", status="405") == 1
    assert value(found, "newsletter_http_request_duration_seconds_count", route="/subscribe/{list}") >= 2
    assert not any("wp-login" in str(labels) or "not-a-real-token" in str(labels) for labels in requests)
    assert "@" not in after and TOKEN not in after


def test_metrics_are_not_served_unless_enabled(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_METRICS_TOKEN", TOKEN)
    with TestClient(create_app(Newsletter(config_mod.load(write_config(tmp_path))))) as client:
        assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_enabled_metrics_without_their_token_stop_serve_from_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.delenv("NEWSLETTER_METRICS_TOKEN", raising=False)
    path = write_config(tmp_path, "\n[metrics]\nenabled = true\n")
    with pytest.raises(ConfigError, match="NEWSLETTER_METRICS_TOKEN is not set"):
        create_app(Newsletter(config_mod.load(path)))


def test_two_newsletters_in_one_process_count_apart(tmp_path, monkeypatch):
    """No process-wide registry: each newsletter's figures are its own."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    with Newsletter(config_mod.load(write_config(one))) as a, Newsletter(config_mod.load(write_config(two))) as b:
        a.links.subscribe("x@example.com", "weekly")
        assert value(samples(a.monitoring.metrics.text().decode()), "newsletter_subscription_changes_total",
                     list="weekly", action="subscribe") == 1
        assert value(samples(b.monitoring.metrics.text().decode()), "newsletter_subscription_changes_total",
                     list="weekly", action="subscribe") == 0


def test_smtp_requests_are_counted_by_reply_code(tmp_path, monkeypatch, smtp):
    """A greylisting relay answers 451 to each first RCPT: the metrics show both codes, one 250 a message."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    inbox.greylist = True
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
    path.write_text(path.read_text().replace("timeout = 5", "timeout = 5\nretry_backoff = 0.01"))
    issue = ready_sample(tmp_path)
    with Newsletter(config_mod.load(path)) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
        report = nl.sends.send(issue, "weekly")
        found = samples(nl.monitoring.metrics.text().decode())
    assert report.exit_code == 0
    assert value(found, "newsletter_provider_requests_total", provider="smtp", status="250") == 12
    assert value(found, "newsletter_provider_requests_total", provider="smtp", status="451") == 12
    assert value(found, "newsletter_deliveries_total", list="weekly", provider="smtp", outcome="sent") == 12


def test_the_scheduler_pushes_its_figures_while_it_runs(tmp_path, pushgateway):
    path = write_config(tmp_path, f'\n[schedule]\ncron = "0 9 1 1 *"\nlist = "weekly"\n'
                                  f'\n[metrics]\npushgateway = "{pushgateway.url}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(path), "scheduler"],
                            env={**os.environ, "NEWSLETTER_SECRET": SECRET}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: ("newsletter", "scheduler") in pushgateway.groups(), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert ("newsletter_oldest_pending_age_seconds", ()) in pushgateway.groups()[("newsletter", "scheduler")]


def test_a_store_that_is_away_leaves_out_its_figures_and_no_other(tmp_path, monkeypatch):
    """A scrape while the database is down still answers, with every counter: only what is read from
    the store is missing."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"',
                                             f'url = "sqlite:///{blocker}/newsletter.db"\nretry_for = 0.1'))
    with Newsletter(config_mod.load(path)) as nl:
        metrics = nl.monitoring.metrics
        metrics.delivered("weekly", "sendgrid", {"sent": 3})
        found = samples(metrics.text().decode())
    assert value(found, "newsletter_deliveries_total", list="weekly", provider="sendgrid", outcome="sent") == 3
    assert value(found, "newsletter_build_info", version=newsletter.__version__) == 1
    assert not any(name.startswith(("newsletter_list_members", "newsletter_oldest_pending"))
                   for name, _labels in found)


def test_the_figures_of_several_processes_of_one_run_combine_into_one():
    """What `send --workers` publishes: counters and histograms summed, a gauge its largest value, a
    series' creation its earliest, and every series once (an info's family is named apart from it)."""
    from newsletter.metrics import Metrics, combine, exposition

    first, second = Metrics(), Metrics()
    for figures, sent, latency, ended in ((first, 5, 0.2, 100.0), (second, 7, 3.0, 200.0)):
        figures.delivered("weekly", "sendgrid", {"sent": sent, "failed": 0})
        figures.provider_latency.labels("sendgrid").observe(latency)
        figures.last_send.labels("weekly").set(ended)
    second.webhook_events.labels("sendgrid", "bounced").inc()  # a series only the other process has
    text = exposition(combine(first.snapshot(), [exposition(second.snapshot()).decode()])).decode()
    found = samples(text)
    assert value(found, "newsletter_deliveries_total", list="weekly", provider="sendgrid", outcome="sent") == 12
    assert value(found, "newsletter_provider_request_duration_seconds_count", provider="sendgrid") == 2
    assert value(found, "newsletter_provider_request_duration_seconds_bucket", provider="sendgrid", le="0.25") == 1
    assert value(found, "newsletter_provider_request_duration_seconds_sum", provider="sendgrid") == pytest.approx(3.2)
    assert value(found, "newsletter_send_last_end_timestamp_seconds", list="weekly") == 200
    assert value(found, "newsletter_webhook_events_total", provider="sendgrid", type="bounced") == 1
    assert value(found, "newsletter_build_info", version=newsletter.__version__) == 1
    created = [v for (name, labels), v in found.items() if name == "newsletter_deliveries_created"
               and ("outcome", "sent") in labels]
    mine = samples(first.text().decode())
    assert created == [value(mine, "newsletter_deliveries_created", list="weekly", provider="sendgrid",
                             outcome="sent")]  # the earlier of the two
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
