"""SendGrid over kept-alive connections, still through the official client: reused while the server
keeps them, a new one when it has closed them, a proxy in the environment still honoured."""

from __future__ import annotations

import logging
import time

from newsletter import Newsletter
from newsletter.config import SendGridSettings
from newsletter.providers.base import Envelope, Recipient
from newsletter.providers.sendgrid import SendGridProvider
from newsletter.render import Rendered

from .conftest import ROOT

ENVELOPE = Envelope(Rendered("s", None, "Hi", "", "<p>%%name%%</p>", "%%name%%", 20),  # type: ignore[arg-type]
                    "from@example.com", "", "", "L <l.example.com>", "s")


def people(first: int, count: int = 3) -> list[Recipient]:
    return [Recipient(i, f"p{i}@example.com", f"P{i}", {"name": f"P{i}"}, f"https://u/{i}")
            for i in range(first, first + count)]


def provider(url: str) -> SendGridProvider:
    return SendGridProvider(SendGridSettings(api_base=url, retry_backoff=0.01), "SG.test-key")


def test_the_batches_of_a_send_share_one_kept_alive_connection_per_slot(sg_config, sendgrid_server, tmp_path):
    rows = "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(60))
    (tmp_path / "many.csv").write_text("email,name\n" + rows)
    sg_config.write_text(sg_config.read_text().replace("batch_size = 1000", "batch_size = 5")
                         + "\n[send]\nconcurrency = 2\n")
    with Newsletter.from_config(sg_config) as nl:
        nl.subscribers.import_csv(tmp_path / "many.csv", "weekly")
        report = nl.sends.send(ROOT / "issues" / "2026-12-01.md", "weekly")
    assert report.counts["sent"] == 60 and sendgrid_server.requests == 12
    assert sendgrid_server.connections <= 2  # one per slot, not one per request


def test_a_connection_the_server_closed_while_idle_is_replaced_and_nothing_is_unknown(sendgrid_server):
    sendgrid_server.close_idle = True
    sg = provider(sendgrid_server.url)
    first = sg.send(ENVELOPE, people(0))
    time.sleep(0.2)  # the server has hung up on the idle connection by now
    second = sg.send(ENVELOPE, people(3))
    sg.close()
    assert [r.status for r in first + second] == ["sent"] * 6
    assert sendgrid_server.requests == 2 and sendgrid_server.connections == 2


def test_sequential_requests_reuse_the_connection_while_the_server_keeps_it(sendgrid_server):
    sg = provider(sendgrid_server.url)
    for first in (0, 3, 6):
        assert [r.status for r in sg.send(ENVELOPE, people(first))] == ["sent"] * 3
    sg.close()
    assert sendgrid_server.requests == 3 and sendgrid_server.connections == 1


def test_a_proxy_in_the_environment_is_still_used(sendgrid_server, monkeypatch):
    monkeypatch.setenv("http_proxy", sendgrid_server.url)  # the fake serves proxied requests as if forwarded
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    sg = provider("http://api.sendgrid.invalid")
    assert [r.status for r in sg.send(ENVELOPE, people(0))] == ["sent"] * 3
    assert sendgrid_server.proxied == 1


def test_the_librarys_debug_log_gives_a_bodys_size_never_the_subscribers_in_it(sendgrid_server, caplog):
    caplog.set_level(logging.DEBUG, logger="python_http_client")
    sg = provider(sendgrid_server.url)
    assert [r.status for r in sg.send(ENVELOPE, people(0))] == ["sent"] * 3
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "PAYLOAD: <" in logged and " bytes>" in logged
    assert "p0@example.com" not in logged and "SG.test-key" not in logged
