"""Postmark end to end: the CLI sends through the real HTTP client to a fake `/email/batch` on loopback,
and its webhooks come back through the web app."""

from __future__ import annotations

import base64
import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod, tokens
from newsletter.cli import cli
from newsletter.ledger import Ledger
from newsletter.schema import deliveries
from newsletter.store import Store
from newsletter.web import create_app

from .conftest import ROOT, SECRET, write_config
from .fake_postmark import FakePostmark

SAMPLE = ROOT / "subscribers" / "sample.csv"
PEOPLE = sorted(line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:])
TOKEN = "pm-test-token"


@pytest.fixture
def postmark():
    server = FakePostmark(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def pm_config(tmp_path, monkeypatch, postmark):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", TOKEN)
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", "hook-secret")
    return write_config(tmp_path, backend="postmark", extra=f"""
[postmark]
api_base = "{postmark.url}"
timeout = 2
max_retries = 3
retry_backoff = 0.01
webhook_username = "hook"
""")


@pytest.fixture
def pm_run(pm_config, sample_issue):
    runner = CliRunner()

    def invoke(*args: object):
        return runner.invoke(cli, ["--config", str(pm_config), *map(str, args)], catch_exceptions=False)

    assert "added 12" in invoke("subscribers", "import", SAMPLE, "--list", "weekly").output
    return invoke


def counts(config_path) -> dict[str, int]:
    with Store(config_mod.load(config_path)) as store:
        return Ledger(store, "2026-12-01", "weekly").counts()


def test_each_recipient_gets_one_whole_message_with_their_own_values_and_headers(pm_run, pm_config, postmark,
                                                                                  sample_issue):
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(postmark.received) == PEOPLE and postmark.requests == 1
    signer = tokens.unsubscribe_signer(SECRET.encode())
    for message in postmark.messages:
        assert message["MessageStream"] == "broadcast" and message["From"] == "Test Weekly <weekly@example.com>"
        assert message["ReplyTo"] == "editor@example.com" and message["Tag"] == "2026-12-01"
        headers = {h["Name"]: h["Value"] for h in message["Headers"]}
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["List-Id"] == "Test Weekly <weekly.news.example.com>"
        claims = signer.check(headers["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1])
        assert (str(claims.subscriber_id), claims.list_name) == (message["Metadata"]["subscriber"], "weekly")
        assert message["Metadata"]["issue"] == "2026-12-01" and "%%" not in message["HtmlBody"] + message["TextBody"]
        assert headers["List-Unsubscribe"].strip("<>") in message["HtmlBody"]
    ada = next(m for m in postmark.messages if "ada@example.com" in m["To"])
    assert ada["To"] == '"Ada Lovelace" <ada@example.com>' and "Ada Lovelace" in ada["TextBody"]
    assert counts(pm_config)["sent"] == 12
    with Store(config_mod.load(pm_config)) as store, store.engine.connect() as conn:
        ids = [row[0] for row in conn.execute(sa.select(deliveries.c.message_id))]
    assert len(ids) == len(set(ids)) == 12  # each row keeps its own message's id


def test_a_subscribers_name_is_escaped_in_the_html_and_kept_out_of_headers(pm_run, postmark, sample_issue):
    assert pm_run("subscribers", "add", "eve@example.com", "--list", "weekly", "--name",
                  'Eve <script>alert(1)</script> "Bcc: x@y.z"').exit_code == 0
    assert pm_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    eve = next(m for m in postmark.messages if "eve@example.com" in m["To"])
    assert "<script>alert" not in eve["HtmlBody"] and "&lt;script&gt;" in eve["HtmlBody"]
    assert eve["To"] == '"Eve <script>alert(1)</script> Bcc: x@y.z" <eve@example.com>'


def test_an_inactive_recipient_fails_and_is_suppressed_so_no_later_send_mails_them(pm_run, pm_config, postmark,
                                                                                   sample_issue):
    postmark.inactive.add("alan@example.com")
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1, result.output  # a failed recipient
    config = pm_config
    assert counts(config)["sent"] == 11 and counts(config)["failed"] == 1
    shown = pm_run("subscribers", "show", "alan@example.com").output
    assert "suppressed: inactive at the provider (Postmark 406" in shown
    assert "alan@example.com" not in postmark.received


def test_a_rate_limit_or_a_server_error_is_retried_across_the_batch(
        pm_run, postmark, sample_issue):
    postmark.answer_next(429)
    postmark.answer_next(503)
    assert pm_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(postmark.received) == PEOPLE


def test_errors_that_outlast_the_retries_keep_every_row_pending(pm_run, pm_config, postmark, sample_issue):
    postmark.answer_next(500, times=3)
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "Postmark failed 3 times" in result.output
    assert counts(pm_config)["pending"] == 12 and postmark.received == []
    assert pm_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(postmark.received) == PEOPLE


def test_a_connection_dropped_after_the_request_was_read_is_unknown_and_never_resent(pm_run, pm_config, postmark,
                                                                                    sample_issue):
    postmark.drop_next()
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "UNKNOWN: 12 messages" in result.output
    assert counts(pm_config)["unknown"] == 12
    assert len(postmark.received) == 12  # the fake took them: this is why they must not go again unasked
    again = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert "nothing to send" in again.output and len(postmark.received) == 12
    resent = pm_run("send", sample_issue, "--list", "weekly", "--yes", "--resend-unknown")
    assert resent.exit_code == 0 and len(postmark.received) == 24 and counts(pm_config)["sent"] == 12


def test_a_refused_request_stops_with_postmarks_words_and_marks_nobody(pm_run, pm_config, postmark, sample_issue):
    postmark.answer_next(422, body={"ErrorCode": 412, "Message": "Your account is pending approval."})
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0
    assert "Postmark refused the request: Your account is pending approval. (ErrorCode 412)" in result.output
    assert counts(pm_config)["pending"] == 12


def test_a_wrong_token_is_one_line_naming_the_variable(pm_run, postmark, sample_issue, monkeypatch):
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "wrong-token")
    result = pm_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0 and "check POSTMARK_SERVER_TOKEN" in result.output
    assert "wrong-token" not in result.output


def test_batches_are_split_at_500_messages_whatever_the_config_asks(pm_config, postmark, sample_issue, tmp_path):
    pm_config.write_text(pm_config.read_text().replace("[postmark]\n", "[postmark]\nbatch_size = 900\n"))
    rows = "\n".join(f"reader{i}@example.org,Reader {i}" for i in range(1_101))
    (tmp_path / "many.csv").write_text("email,name\n" + rows + "\n")
    runner = CliRunner()
    base = ["--config", str(pm_config)]
    imported = runner.invoke(cli, [*base, "subscribers", "import", str(tmp_path / "many.csv"), "--list", "weekly"])
    assert imported.exit_code == 0
    assert runner.invoke(cli, [*base, "send", str(sample_issue), "--list", "weekly", "--yes"]).exit_code == 0
    assert len(postmark.received) == len(set(postmark.received)) == 1_101 and postmark.requests == 3


def test_the_dry_run_writes_the_exact_request_without_the_token(pm_run, postmark, sample_issue, tmp_path):
    result = pm_run("send", sample_issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0 and TOKEN not in result.output
    body = json.loads((tmp_path / "out" / "2026-12-01-postmark-request.json").read_text())
    assert len(body) == 12 and postmark.requests == 0
    assert all(m["MessageStream"] == "broadcast" for m in body)


# -- webhooks ------------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bounce(kind: str = "HardBounce", email: str = "alan@example.com", record: str = "Bounce", **extra) -> dict:
    return {"RecordType": record, "ID": 4_323_372_036_854_775_807, "Type": kind, "MessageID": "m-1", "Email": email,
            "BouncedAt": "2026-12-01T09:05:00Z", "Details": "smtp;550 5.1.1 no such user",
            "Metadata": {"issue": "2026-12-01", "list": "weekly"}, "MessageStream": "broadcast", **extra}


@pytest.fixture
def hooks(pm_run, pm_config):
    nl = Newsletter.from_config(pm_config)
    client = TestClient(create_app(nl), base_url="https://news.example.com")
    yield client, nl
    nl.close()


def test_a_hard_bounce_with_good_credentials_suppresses_and_a_replay_changes_nothing(hooks):
    client, nl = hooks
    answer = client.post("/webhooks/postmark", json=bounce(), headers=basic("hook", "hook-secret"))
    assert answer.status_code == 200 and answer.json()["bounced"] == 1
    assert nl.subscribers.get("alan@example.com").suppressed
    assert nl.subscribers.get("alan@example.com").memberships["weekly"][0] == "bounced"
    again = client.post("/webhooks/postmark", json=bounce(), headers=basic("hook", "hook-secret"))
    assert again.json().get("duplicate") == 1


@pytest.mark.parametrize("headers", [{}, basic("hook", "wrong"), basic("other", "hook-secret"),
                                     {"Authorization": "Basic !!!"}])
def test_wrong_or_missing_credentials_are_refused_before_the_body_is_read(hooks, headers):
    client, nl = hooks
    answer = client.post("/webhooks/postmark", json=bounce(), headers=headers)
    assert answer.status_code == 403
    assert not nl.subscribers.get("alan@example.com").suppressed


@pytest.mark.parametrize("kind", ["DMARCPolicy", "SoftBounce", "Transient", "DnsError", "Blocked"])
def test_a_bounce_that_is_the_senders_doing_or_for_now_never_suppresses(hooks, kind):
    client, nl = hooks
    assert client.post("/webhooks/postmark", json=bounce(kind), headers=basic("hook", "hook-secret")).status_code == 200
    person = nl.subscribers.get("alan@example.com")
    assert not person.suppressed and person.memberships["weekly"][0] == "active"


def test_a_complaint_and_an_unsubscribe_at_postmark_reach_the_consent_rules(hooks):
    client, nl = hooks
    complaint = bounce("SpamComplaint", "ada@example.com", record="SpamComplaint")
    assert client.post("/webhooks/postmark", json=complaint, headers=basic("hook", "hook-secret")).status_code == 200
    assert nl.subscribers.get("ada@example.com").memberships["weekly"][0] == "complained"
    change = {"RecordType": "SubscriptionChange", "MessageID": "m-2", "ChangedAt": "2026-12-01T10:00:00Z",
              "Recipient": "alan@example.com", "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Metadata": {"issue": "2026-12-01", "list": "weekly"}}
    assert client.post("/webhooks/postmark", json=change, headers=basic("hook", "hook-secret")).status_code == 200
    assert nl.subscribers.get("alan@example.com").memberships["weekly"][0] == "unsubscribed"


def test_without_a_configured_password_every_call_is_refused(hooks, monkeypatch):
    client, _nl = hooks
    monkeypatch.delenv("POSTMARK_WEBHOOK_PASSWORD")
    assert client.post("/webhooks/postmark", json=bounce(), headers=basic("hook", "")).status_code == 403
