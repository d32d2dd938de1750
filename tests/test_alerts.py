"""Alerts: the operator hears of a send gone wrong once per incident, by mail and by webhook."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.errors import ConfigError, WebhookError
from newsletter.schema import deliveries

from .conftest import SECRET, ready_sample, write_config
from .webhelpers import WebhookSigner

OPS = "ops@example.com"


class Receiver:
    """A Slack-style incoming webhook on loopback: it keeps each JSON body; `fail` answers 500 that many times."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.fail = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.posts.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secretpart"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.server.shutdown()


def _config(tmp_path: Path, smtp_port: int, receiver: Receiver, extra: str = "") -> Path:
    return write_config(tmp_path, backend="smtp", smtp_port=smtp_port, extra=(
        f'\n[schedule]\ncron = "* * * * *"\ntimezone = "UTC"\nlist = "weekly"\n'
        f'\n[alerts]\nemail = "{OPS}"\nwebhook_url = "{receiver.url}"\nfailure_rate = 0.1\n{extra}'))


def _people(tmp_path: Path, *addresses: str) -> Path:
    path = tmp_path / "people.csv"
    path.write_text("email\n" + "".join(f"{a}\n" for a in addresses))
    return path


def _to_ops(inbox) -> list:
    return [msg for _sender, rcpts, msg in inbox.messages if OPS in rcpts]


def test_a_failing_cron_send_alerts_once_by_mail_and_webhook(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    path = _config(tmp_path, controller.port, receiver)
    issue = ready_sample(tmp_path, dt.datetime.now(dt.UTC).date().isoformat())
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--config", str(path), *map(str, args)], catch_exceptions=False)

    run("subscribers", "import", _people(tmp_path, "ann@example.com", "refuse.bo@example.com", "cy@example.com",
                                         "refuse.di@example.com"), "--list", "weekly")
    first = run("send", "--due")
    assert first.exit_code == 1, first.output  # two of four refused for good
    mails = _to_ops(inbox)
    assert len(mails) == 1 and len(receiver.posts) == 1
    assert f"2 of 4 messages of {issue.stem} to weekly failed" in mails[0]["Subject"]
    assert f"newsletter status {issue.stem} --list weekly" in mails[0].get_body(("plain",)).get_content()
    assert receiver.posts[0]["text"].startswith(f"*2 of 4 messages of {issue.stem}")
    assert "@" not in receiver.posts[0]["text"]  # nobody's address leaves for a chat room
    for _ in range(2):  # the next cron runs: the send is over, the incident was told
        run("send", "--due")
    assert len(_to_ops(inbox)) == 1 and len(receiver.posts) == 1
    assert run("alerts", "list").output.split() == [f"send-failures:{issue.stem}:weekly"]


def test_an_alert_that_could_not_be_delivered_is_tried_again_on_that_channel_only(tmp_path, monkeypatch, smtp,
                                                                                  receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    receiver.fail = 1
    with Newsletter(config_mod.load(_config(tmp_path, controller.port, receiver))) as nl:
        nl.alerts.missed("weekly", "2026-11-30", "its slot passed while the machine was off")
        assert len(_to_ops(inbox)) == 1 and receiver.posts == []
        assert nl.alerts.deliver() == []  # the next run: the webhook answers now
        assert len(receiver.posts) == 1 and len(_to_ops(inbox)) == 1
        nl.alerts.missed("weekly", "2026-11-30", "its slot passed while the machine was off")
        assert nl.alerts.deliver() == []
    assert len(receiver.posts) == 1 and len(_to_ops(inbox)) == 1


def test_a_send_that_stopped_moving_alerts_once_and_is_over_when_it_is_done(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    path = _config(tmp_path, controller.port, receiver, "stalled_minutes = 10\n")
    issue = ready_sample(tmp_path, "2027-06-07")  # not due: only sent by hand
    with Newsletter(config_mod.load(path)) as nl:
        nl.subscribers.import_csv(_people(tmp_path, "ann@example.com", "bo@example.com", "cy@example.com"), "weekly")
        assert nl.sends.send(issue, "weekly", limit=1).exit_code == 3
        nl.schedule.due("weekly")
        assert receiver.posts == []  # it only just stopped
        with nl.store.write() as conn:
            conn.execute(deliveries.update().values(updated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)
                                                    - dt.timedelta(minutes=30)))
        nl.schedule.due("weekly")
        nl.schedule.due("weekly")
        assert [p["text"].split("\n")[0] for p in receiver.posts] == [
            f"*The send of {issue.stem} to weekly has not moved for 10 minutes*"]
        assert "2 messages wait" in receiver.posts[0]["text"]
        assert nl.sends.send(issue, "weekly").exit_code == 0
        nl.schedule.due("weekly")
        assert nl.alerts.open() == []
    assert len(_to_ops(inbox)) == 1


def test_repeated_signature_failures_alert_once(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, _inbox = smtp
    signer, forger = WebhookSigner(), WebhookSigner()
    path = _config(tmp_path, controller.port, receiver, "signature_failures = 3\n")
    path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"'))
    body = json.dumps([{"email": "a@example.com", "event": "delivered", "timestamp": int(time.time()),
                        "sg_event_id": "e1", "sg_message_id": "m1.x"}]).encode()
    with Newsletter(config_mod.load(path)) as nl:
        for _ in range(6):
            with pytest.raises(WebhookError):
                nl.webhooks.receive("sendgrid", body, forger.headers(body))
        assert len(receiver.posts) == 1
        assert receiver.posts[0]["text"].startswith("*3 sendgrid webhook calls refused for their signature")
        nl.webhooks.receive("sendgrid", body, signer.headers(body))
        assert nl.alerts.open() == ["signatures:sendgrid"]  # still six in the hour


def test_a_wave_of_sender_side_refusals_alerts_once(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, _inbox = smtp
    signer = WebhookSigner()
    path = _config(tmp_path, controller.port, receiver, "sender_bounces = 3\n")
    path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"'))

    def blocked(n: int) -> bytes:
        return json.dumps([{"email": f"r{n}@example.com", "event": "bounce", "type": "blocked", "timestamp":
                            int(time.time()), "reason": "550 5.7.26 DMARC policy", "sg_event_id": f"b{n}",
                            "sg_message_id": f"m{n}.x"}]).encode()

    with Newsletter(config_mod.load(path)) as nl:
        for n in range(5):
            nl.webhooks.receive("sendgrid", blocked(n), signer.headers(blocked(n)))
        assert len(receiver.posts) == 1
        assert receiver.posts[0]["text"].startswith("*3 messages refused for the sender's setup in 60 minutes*")
        nl.schedule.due("weekly")
        assert len(receiver.posts) == 1


def test_a_missed_slot_alerts_once_though_every_cron_run_reports_it(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    path = _config(tmp_path, controller.port, receiver).read_text().replace('cron = "* * * * *"',
                                                                          'cron = "0 9 * * MON"')
    (tmp_path / "config.toml").write_text(path)
    monday = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    ready_sample(tmp_path, "2026-11-30")
    with Newsletter(config_mod.load(tmp_path / "config.toml")) as nl:
        for hours in (27, 28, 50):  # the machine was off on Monday morning
            run = nl.schedule.due("weekly", now=monday + dt.timedelta(hours=hours))
            assert run.exit_code == 1 and "MISSED" in run.line
    assert len(receiver.posts) == 1 and len(_to_ops(inbox)) == 1
    assert receiver.posts[0]["text"].startswith("*2026-11-30 was not sent to weekly: its time passed*")


def test_a_send_that_stops_with_an_error_alerts_through_the_other_channel(tmp_path, monkeypatch, receiver,
                                                                          sendgrid_server):
    """The provider refuses the key: the mail alert cannot go through it either, the webhook says so, and the
    mail is tried again by the next run."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    path = write_config(tmp_path, api_base=sendgrid_server.url, extra=f'\n[alerts]\nemail = "{OPS}"\n'
                                                                      f'webhook_url = "{receiver.url}"\n')
    issue = ready_sample(tmp_path)
    with Newsletter(config_mod.load(path)) as nl:
        nl.subscribers.add("ann@example.com", "weekly")
        with pytest.raises(Exception, match="refused the API key"):
            nl.sends.send(issue, "weekly")
        assert len(receiver.posts) == 1
        assert "stopped with an error" in receiver.posts[0]["text"] and "SG.wrong" not in receiver.posts[0]["text"]
        with nl.store.engine.connect() as conn:
            mailed = conn.execute(sa.text("SELECT mailed_at FROM alerts")).scalar()
        assert mailed is None  # given back: the next run tries to mail it again


def test_alerts_test_reaches_each_channel_and_says_so(tmp_path, monkeypatch, smtp, receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp
    path = _config(tmp_path, controller.port, receiver)
    result = CliRunner().invoke(cli, ["--config", str(path), "alerts", "test"])
    assert result.exit_code == 0, result.output
    assert f"mail to {OPS}: sent" in result.output and "webhook at 127.0.0.1: sent" in result.output
    assert "secretpart" not in result.output
    assert len(_to_ops(inbox)) == 1 and receiver.posts[0]["text"].startswith("*Test alert from Test Weekly*")
    receiver.fail = 1
    failed = CliRunner().invoke(cli, ["--config", str(path), "alerts", "test"])
    assert failed.exit_code == 1 and "webhook at 127.0.0.1: answered 500" in failed.output
    assert "secretpart" not in failed.output


def test_no_channel_is_a_config_error_for_alerts_test(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(path), "alerts", "test"])
    assert result.exit_code == 2 and "[alerts] has no email" in result.output


@pytest.mark.parametrize(("extra", "message"), [
    ('webhook_url = "slack"', r"\[alerts\] webhook_url: 'slack' is not an http\(s\) address"),
    ('email = "a@example.com, b@example.com"', r"\[alerts\] email: .* is not one address"),
    ("failure_rate = 2", r"\[alerts\] failure_rate: 2.0 is not a share"),
])
def test_bad_alert_settings_are_one_line_errors(tmp_path, extra, message):
    path = write_config(tmp_path, f"\n[alerts]\n{extra}\n")
    with pytest.raises(ConfigError, match=message):
        config_mod.load(path)


def test_signature_failures_are_over_an_hour_later_and_a_new_wave_alerts_again(tmp_path, monkeypatch, smtp,
                                                                              receiver):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, _inbox = smtp
    path = _config(tmp_path, controller.port, receiver, "signature_failures = 2\n")
    start = time.time()
    with Newsletter(config_mod.load(path)) as nl:
        for n in range(3):
            nl.alerts.signature_failure("postmark", at=start + n)
        nl.alerts.signature_ok("postmark", at=start + 60)
        assert nl.alerts.open() == ["signatures:postmark"] and len(receiver.posts) == 1
        nl.alerts.signature_ok("postmark", at=start + 3700)
        assert nl.alerts.open() == []
        for n in range(2):
            nl.alerts.signature_failure("postmark", at=start + 4000 + n)
    assert len(receiver.posts) == 2
