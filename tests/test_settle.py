"""`unknown` rows are settled by what the provider says happened, and every problem row can be listed."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.providers import Result
from newsletter.schema import deliveries, subscribers
from newsletter.web import create_app

from .conftest import ROOT, SECRET, ready_sample, write_config
from .fake_provider import FakeProvider
from .webhelpers import WebhookSigner, event_batch

SAMPLE = ROOT / "subscribers" / "sample.csv"


def unknown(recipients):
    return [Result(r.key, "unknown", error="timed out after the request was sent") for r in recipients]


@pytest.fixture
def crashed(tmp_path, monkeypatch):
    """The sample issue sent to the sample list with every outcome unknown, and a webhook key configured."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    signer = WebhookSigner()
    path = write_config(tmp_path, base_url="https://testserver")
    path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"'))
    fake = FakeProvider(max_batch=100)
    fake.next(unknown)
    nl = Newsletter(config_mod.load(path), provider_factory=fake.factory)
    nl.subscribers.import_csv(SAMPLE, "weekly")
    issue = ready_sample(tmp_path)
    report = nl.sends.send(issue, "weekly")
    assert report.counts["unknown"] == 12
    yield nl, signer, fake, issue
    nl.close()


def states(nl: Newsletter) -> dict[str, tuple[str, str]]:
    with nl.store.engine.connect() as conn:
        return {email: (state, error or "") for email, state, error in conn.execute(
            sa.select(subscribers.c.email, deliveries.c.state, deliveries.c.error)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id))}


def test_a_verified_event_for_an_unknown_row_settles_it_and_resend_unknown_sends_only_the_rest(crashed):
    nl, signer, fake, issue = crashed
    ids = {line.split(",")[0]: nl.store.get(line.split(",")[0]).id for line in SAMPLE.read_text().splitlines()[1:]}
    body = event_batch("2026-12-01", ids, int(time.time()))
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        answer = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
    assert answer.status_code == 200, answer.text
    after = states(nl)
    for email in ("ada@example.com", "barbara@example.org", "linus@example.com", "katherine@example.org",
                  "edsger@example.com"):  # delivered, deferred, processed, complained, unsubscribed: it went out
        assert after[email][0] == "sent", email
        assert "was unknown; settled by sendgrid webhook" in after[email][1]
    assert after["grace@example.org"][0] == "failed" and "550 5.1.1 user unknown" in after["grace@example.org"][1]
    assert after["alan@example.com"][0] == "failed"  # blocked
    still = {email for email, (state, _e) in after.items() if state == "unknown"}
    assert len(still) == 5 and "margaret@example.org" in still  # an event type we do not know settles nothing
    assert nl.sends.status(issue, "weekly").counts["unknown"] == 5
    before = len(fake.sent)
    resent = nl.sends.send(issue, "weekly", resend_unknown=True)
    assert sorted(fake.sent[before:]) == sorted(still)  # the provider's answer this time: sent
    assert resent.counts["unknown"] == 0


def test_an_event_never_settles_a_row_that_is_not_unknown(crashed):
    nl, signer, _fake, issue = crashed
    ids = {line.split(",")[0]: nl.store.get(line.split(",")[0]).id for line in SAMPLE.read_text().splitlines()[1:]}
    nl.sends.send(issue, "weekly", resend_unknown=True)  # all sent now
    body = event_batch("2026-12-01", ids, int(time.time()))
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        assert client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body)).status_code == 200
    assert {state for state, _e in states(nl).values()} == {"sent"}  # a later bounce is the consent rules' business


def test_status_lists_every_problem_row_as_json_and_as_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    rows = tmp_path / "many.csv"
    rows.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(450)) + "=cmd@example.com\n")
    fake = FakeProvider(max_batch=1000)
    fake.next(unknown)
    with Newsletter(config_mod.load(path), provider_factory=fake.factory) as nl:
        nl.subscribers.import_csv(rows, "weekly")
        issue = ready_sample(tmp_path)
        nl.sends.send(issue, "weekly")
    runner = CliRunner()
    listed = runner.invoke(cli, ["--config", str(path), "status", str(issue), "--list", "weekly", "--json"])
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.output)["problems"]) == 451
    exported = runner.invoke(cli, ["--config", str(path), "status", str(issue), "--list", "weekly", "--csv"])
    assert exported.exit_code == 0, exported.output
    lines = exported.output.splitlines()
    assert lines[0] == "email,state,error,attempts" and len(lines) == 452
    assert "'=cmd@example.com,unknown,timed out after the request was sent,1" in lines  # no formula
