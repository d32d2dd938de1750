"""Mailgun end to end: the CLI sends through httpx to a fake `/v3/{domain}/messages` that substitutes
recipient variables as Mailgun does; the provider-wide scenarios are in test_conformance."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod, tokens
from newsletter.cli import cli
from newsletter.ledger import Ledger
from newsletter.store import Store
from newsletter.web import create_app

from .conftest import ROOT, SECRET, write_config
from .fake_mailgun import FakeMailgun

SAMPLE = ROOT / "subscribers" / "sample.csv"
PEOPLE = sorted(line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:])


@pytest.fixture
def mailgun():
    server = FakeMailgun("mg-key", "mg.example.com").start()
    yield server
    server.stop()


@pytest.fixture
def mg_config(tmp_path, monkeypatch, mailgun):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("MAILGUN_API_KEY", "mg-key")
    return write_config(tmp_path, backend="mailgun", extra=f"""
[mailgun]
api_base = "{mailgun.url}"
domain = "mg.example.com"
timeout = 2
max_retries = 3
retry_backoff = 0.01
""")


@pytest.fixture
def mg_run(mg_config):
    def invoke(*args: object):
        return CliRunner().invoke(cli, ["--config", str(mg_config), *map(str, args)], catch_exceptions=False)

    assert "added 12" in invoke("subscribers", "import", SAMPLE, "--list", "weekly").output
    return invoke


def counts(path) -> dict[str, int]:
    with Store(config_mod.load(path)) as store:
        return Ledger(store, "2026-12-01", "weekly").counts()


def test_one_call_carries_every_recipients_own_values_and_nobody_sees_the_others(mg_run, mailgun, sample_issue):
    assert mg_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(mailgun.received) == PEOPLE and mailgun.requests == 1 and mailgun.leaks == 0
    signer = tokens.unsubscribe_signer(SECRET.encode())
    for message in mailgun.messages:
        link = message["headers"]["List-Unsubscribe"]
        claims = signer.check(link.strip("<>").rsplit("/", 1)[1])
        assert claims.list_name == "weekly" and claims.for_address(message["to"])
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert link.strip("<>") in message["html"] and "%recipient." not in message["html"] + message["text"]
        assert message["variables"] == {"issue": "2026-12-01", "list": "weekly"}
        assert message["options"]["tracking-opens"] == "no"
    ada = next(m for m in mailgun.messages if m["to"] == "ada@example.com")
    assert "Ada Lovelace" in ada["text"] and "Ada Lovelace" in ada["html"]


def test_a_subscribers_text_is_escaped_and_never_read_as_mailguns_syntax(mg_run, mailgun, sample_issue):
    assert mg_run("subscribers", "add", "eve@example.com", "--list", "weekly", "--name",
                  "Eve <b>%recipient.lu%</b>").exit_code == 0
    assert mg_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    eve = next(m for m in mailgun.messages if m["to"] == "eve@example.com")
    assert "Eve &lt;b&gt;%recipient.lu%&lt;/b&gt;" in eve["html"]  # literal: substitution is one pass
    assert "Eve <b>%recipient.lu%</b>" in eve["text"]


def test_a_literal_recipient_variable_in_the_issue_comes_out_as_written(mg_run, mailgun, sample_issue):
    sample_issue.write_text(sample_issue.read_text() + "\nWrite %recipient.name% in Mailgun templates.\n")
    assert mg_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert all("Write %recipient.name% in Mailgun templates." in m["text"] for m in mailgun.messages)


def test_a_refused_call_stops_with_mailguns_words_and_marks_nobody(mg_run, mg_config, mailgun, sample_issue):
    mailgun.answer_next(400, body={"message": "'from' parameter is not a valid address. please check documentation"})
    result = mg_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0 and "Mailgun refused the request: 'from' parameter is not a valid" in result.output
    assert counts(mg_config)["pending"] == 12


def test_a_wrong_key_names_the_variable_never_the_key(mg_run, mailgun, sample_issue, monkeypatch):
    monkeypatch.setenv("MAILGUN_API_KEY", "wrong-key")
    result = mg_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0 and "check MAILGUN_API_KEY" in result.output and "wrong-key" not in result.output


def test_the_domain_is_required(tmp_path, monkeypatch, sample_issue):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, backend="mailgun")
    result = CliRunner().invoke(cli, ["--config", str(path), "send", str(sample_issue), "--list", "weekly", "--yes"])
    assert result.exit_code == 2 and "[mailgun] domain: required" in result.output


def test_the_dry_run_writes_the_exact_fields_without_the_key(mg_run, mailgun, sample_issue, tmp_path):
    result = mg_run("send", sample_issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0 and "mg-key" not in result.output and mailgun.requests == 0
    fields = json.loads((tmp_path / "out" / "2026-12-01-mailgun-request.json").read_text())
    assert sorted(value for key, value in fields if key == "to") == PEOPLE
    variables = json.loads(dict(fields)["recipient-variables"])
    assert sorted(variables) == PEOPLE and all(v["lu"].startswith("<https://") for v in variables.values())


def signed(event: dict, at: int | None = None, token: str = "t-1") -> bytes:
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(b"mg-signing-key", f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": str(stamp), "token": token, "signature": digest},
                       "event-data": {"recipient": "alan@example.com", "timestamp": stamp, "id": f"ev-{token}",
                                      "user-variables": {"issue": "2026-12-01", "list": "weekly"}, **event}}).encode()


@pytest.fixture
def hooks(mg_run, mg_config, monkeypatch):
    monkeypatch.setenv("MAILGUN_WEBHOOK_SIGNING_KEY", "mg-signing-key")
    nl = Newsletter.from_config(mg_config)
    yield TestClient(create_app(nl), base_url="https://news.example.com"), nl
    nl.close()


@pytest.mark.parametrize(("event", "status", "suppressed"), [
    ({"event": "failed", "severity": "temporary", "reason": "generic"}, "active", False),
    ({"event": "failed", "severity": "permanent", "reason": "espblock"}, "active", False),
    ({"event": "failed", "severity": "permanent", "reason": "generic"}, "active", False),
    ({"event": "failed", "severity": "permanent", "reason": "bounce"}, "bounced", True),
    ({"event": "complained"}, "complained", True),
    ({"event": "unsubscribed"}, "unsubscribed", False),
])
def test_each_event_reaches_the_consent_rules_and_the_senders_own_failures_never_suppress(
        hooks, event, status, suppressed):
    client, nl = hooks
    assert client.post("/webhooks/mailgun", content=signed(event)).status_code == 200
    person = nl.subscribers.get("alan@example.com")
    assert person.memberships["weekly"][0] == status and bool(person.suppressed) == suppressed
