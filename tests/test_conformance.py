"""One suite, every HTTP provider: the same scenarios against each provider's fake, through the real CLI.

Each provider comes as a Kit: its fake server, a config pointing at it, how to make it refuse
one address inside its answer, and how to sign (or mis-sign) one of its webhook calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.ledger import Ledger
from newsletter.store import Store
from newsletter.web import create_app

from .conftest import ROOT, SECRET, wait_for, write_config
from .fake_mailgun import FakeMailgun
from .fake_postmark import FakePostmark
from .fake_sendgrid import FakeSendGrid
from .fake_ses import FakeSes
from .test_ses import aws_env, bounce as ses_bounce, ses_section
from .webhelpers import SnsSigner, WebhookSigner

SAMPLE = ROOT / "subscribers" / "sample.csv"


@dataclass
class Kit:
    name: str
    server: Any
    config: Path
    limit: int  # recipients per request at most
    refuse: Callable[[str], None] | None  # the provider refuses this address inside its answer (None: it cannot)
    bounce: Callable[[str, int], tuple[bytes, dict[str, str]]]  # a signed hard-bounce call (address, time)
    bad_bounce: Callable[[str, int], tuple[bytes, dict[str, str]]]  # the same call with its proof altered
    signs_time: bool  # whether the provider's proof covers a time (and old calls can be refused)
    refuses_replays: bool = False  # a replayed call is refused (single-use tokens) rather than counted once
    calls_per_batch: int = 1  # requests one batch of the ledger's makes (so a crash leaves them all unknown)
    in_flight: int = 8  # batches with the provider at once

    def run(self, *args: object):
        return CliRunner().invoke(cli, ["--config", str(self.config), *map(str, args)], catch_exceptions=False)

    def counts(self) -> dict[str, int]:
        with Store(config_mod.load(self.config)) as store:
            return Ledger(store, "2026-12-01", "weekly").counts()


def _sendgrid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> Kit:
    server = FakeSendGrid("SG.test-key").start()
    signer = WebhookSigner()
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    config = write_config(tmp_path, api_base=server.url, batch_size=batch)
    settings = (f'max_retries = 3\nretry_backoff = 0.01\nwebhook_public_key = "{signer.public_key}"\n'
                "webhook_tolerance = 300")
    config.write_text(config.read_text().replace("max_retries = 3", settings))

    def bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps([{"email": email, "timestamp": at, "event": "bounce", "type": "bounce",
                            "sg_event_id": f"bounce-{email}", "issue": "2026-12-01", "list": "weekly",
                            "reason": "550 5.1.1 no such user"}]).encode()
        return body, signer.headers(body, at)

    def bad_bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        body, headers = bounce(email, at)
        return body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": WebhookSigner().sign(body, str(at))}

    return Kit("sendgrid", server, config, 1000, lambda email: server.reject.__setitem__(email, "Invalid address."),
               bounce, bad_bounce, signs_time=True)


def _postmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> Kit:
    server = FakePostmark("pm-token").start()
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "pm-token")
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", "hook-secret")
    config = write_config(tmp_path, backend="postmark", extra=f"""
[postmark]
api_base = "{server.url}"
batch_size = {min(batch, 500)}
timeout = 2
max_retries = 3
retry_backoff = 0.01
webhook_username = "hook"
""")
    auth = {"Authorization": "Basic " + base64.b64encode(b"hook:hook-secret").decode()}

    def bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        body = json.dumps({"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "MessageID": "m-1", "Email": email,
                           "BouncedAt": stamp, "Details": "550 5.1.1 no such user",
                           "Metadata": {"issue": "2026-12-01", "list": "weekly"}}).encode()
        return body, auth

    def bad_bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        return bounce(email, at)[0], {"Authorization": "Basic " + base64.b64encode(b"hook:guessed").decode()}

    return Kit("postmark", server, config, 500, server.inactive.add, bounce, bad_bounce, signs_time=False)


def _mailgun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> Kit:
    server = FakeMailgun("mg-key", "mg.example.com").start()
    monkeypatch.setenv("MAILGUN_API_KEY", "mg-key")
    monkeypatch.setenv("MAILGUN_WEBHOOK_SIGNING_KEY", "mg-signing-key")
    config = write_config(tmp_path, backend="mailgun", extra=f"""
[mailgun]
api_base = "{server.url}"
domain = "mg.example.com"
batch_size = {batch}
timeout = 2
max_retries = 3
retry_backoff = 0.01
webhook_tolerance = 300
""")

    def sign(at: int, token: str, key: str = "mg-signing-key") -> dict[str, str]:
        digest = hmac.new(key.encode(), f"{at}{token}".encode(), hashlib.sha256).hexdigest()
        return {"timestamp": str(at), "token": token, "signature": digest}

    def bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        body = {"signature": sign(at, f"token-{email}-{at}"), "event-data": {
            "event": "failed", "severity": "permanent", "reason": "bounce", "recipient": email, "timestamp": at,
            "id": f"ev-{email}", "user-variables": {"issue": "2026-12-01", "list": "weekly"},
            "delivery-status": {"code": 550, "description": "550 5.1.1 no such user"}}}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    def bad_bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        body, headers = bounce(email, at)
        data = json.loads(body)
        data["signature"] = sign(at, data["signature"]["token"], key="guessed")  # the proof is in the body
        return json.dumps(data).encode(), headers

    return Kit("mailgun", server, config, 1000, None, bounce, bad_bounce, signs_time=True, refuses_replays=True)


def _ses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> Kit:
    server = FakeSes().start()
    aws_env(monkeypatch, tmp_path)
    signer = SnsSigner(tmp_path)
    config = write_config(tmp_path, backend="ses", extra=ses_section(server, signer, batch=min(batch, 50))
                          + "webhook_tolerance = 300\n[send]\nconcurrency = 1\n")

    def bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        return signer.notification(ses_bounce(email), at=at), {"Content-Type": "text/plain; charset=UTF-8"}

    def bad_bounce(email: str, at: int) -> tuple[bytes, dict[str, str]]:
        other = SnsSigner(tmp_path / "..")  # a key the pinned certificate is not for
        return other.notification(ses_bounce(email), at=at), {"Content-Type": "text/plain; charset=UTF-8"}

    def refuse(email: str) -> None:
        server.statuses[email] = ("MESSAGE_REJECTED", "Message rejected")

    return Kit("ses", server, config, 50, refuse, bounce, bad_bounce, signs_time=True, calls_per_batch=10,
               in_flight=1)


KITS = {"sendgrid": _sendgrid, "postmark": _postmark, "mailgun": _mailgun, "ses": _ses}


@pytest.fixture(params=sorted(KITS))
def make_kit(request, tmp_path, monkeypatch, sample_issue):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    made: list[Kit] = []

    def make(batch: int = 1000, rows: int = 0) -> Kit:
        kit = KITS[request.param](tmp_path, monkeypatch, batch)
        made.append(kit)
        source = SAMPLE
        if rows:
            source = tmp_path / "many.csv"
            source.write_text("email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(rows)))
        assert kit.run("subscribers", "import", source, "--list", "weekly").exit_code == 0
        return kit

    yield make
    for kit in made:
        kit.server.stop()


def test_batches_are_split_at_the_providers_limit_and_everyone_gets_one(make_kit, sample_issue):
    kit = make_kit(rows=1_101)
    assert kit.run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert len(kit.server.received) == len(set(kit.server.received)) == 1_101
    assert kit.server.requests == -(-1_101 // kit.limit)


def test_a_429_in_the_middle_pauses_and_nobody_is_skipped_or_mailed_twice(make_kit, sample_issue):
    kit = make_kit(batch=4)
    kit.server.answer_next(429)  # the first request; the others wait for the pause
    assert kit.run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(kit.server.received) == sorted(set(kit.server.received)) and len(kit.server.received) == 12


def test_a_recipient_refused_inside_the_answer_fails_alone(make_kit, sample_issue):
    kit = make_kit()
    if kit.refuse is None:
        pytest.skip(f"{kit.name} takes or refuses a call whole: its answer has no result per recipient")
    kit.refuse("alan@example.com")
    result = kit.run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert (kit.counts()["sent"], kit.counts()["failed"]) == (11, 1)
    assert "alan@example.com" not in kit.server.received and len(kit.server.received) == 11


def test_an_answer_lost_after_the_request_was_read_is_unknown_and_never_sent_again_unasked(make_kit, sample_issue):
    kit = make_kit()
    kit.server.drop_next()
    assert kit.run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 1
    assert kit.counts()["unknown"] == 12 and len(kit.server.received) == 12
    assert "nothing to send" in kit.run("send", sample_issue, "--list", "weekly", "--yes").output
    assert len(kit.server.received) == 12


def test_a_send_killed_mid_way_then_resumed_mails_nobody_twice(make_kit, sample_issue):
    kit = make_kit(batch=5, rows=150)
    kit.server.latency = 0.15
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    command = [sys.executable, "-m", "newsletter.cli", "--config", str(kit.config), "send", str(sample_issue),
               "--list", "weekly", "--yes"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(kit.server.received) >= 30, 30), "the send never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = len(kit.server.received)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_at < 150, "the send finished before it was killed"
    kit.server.latency = 0
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode in (0, 1), resumed.stderr  # 1 when rows in flight at the kill are unknown
    counts = kit.counts()
    assert len(kit.server.received) == len(set(kit.server.received))  # nobody twice
    assert counts["sent"] + counts["unknown"] == 150 and counts["pending"] == 0
    assert counts["unknown"] <= 5 * kit.calls_per_batch * kit.in_flight  # at most the batches that were in flight
    assert len(kit.server.received) > killed_at  # the resumed send went on from where the killed one stopped


@pytest.fixture
def hooks(make_kit):
    kit = make_kit()
    nl = Newsletter.from_config(kit.config)
    yield kit, TestClient(create_app(nl), base_url="https://news.example.com"), nl
    nl.close()


def test_a_webhook_with_good_proof_suppresses_and_a_replay_changes_nothing(hooks):
    kit, client, nl = hooks
    body, headers = kit.bounce("alan@example.com", int(time.time()))
    first = client.post(f"/webhooks/{kit.name}", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["bounced"] == 1
    assert nl.subscribers.get("alan@example.com").suppressed
    again = client.post(f"/webhooks/{kit.name}", content=body, headers=headers)
    if kit.refuses_replays:  # its token was used: the replay is refused before it is read
        assert again.status_code == 403
    else:
        assert again.status_code == 200 and again.json().get("duplicate") == 1
    assert nl.subscribers.get("alan@example.com").memberships["weekly"][0] == "bounced"


def test_a_webhook_with_bad_proof_is_refused_and_changes_nothing(hooks):
    kit, client, nl = hooks
    body, headers = kit.bad_bounce("alan@example.com", int(time.time()))
    answer = client.post(f"/webhooks/{kit.name}", content=body, headers=headers)
    assert answer.status_code == 403 and not nl.subscribers.get("alan@example.com").suppressed


def test_a_webhook_call_signed_long_ago_is_refused(hooks):
    kit, client, nl = hooks
    if not kit.signs_time:
        pytest.skip(f"{kit.name}'s webhook calls carry no signed time (basic credentials only): nothing to age")
    body, headers = kit.bounce("alan@example.com", int(time.time()) - 3600)
    assert client.post(f"/webhooks/{kit.name}", content=body, headers=headers).status_code == 403
    assert not nl.subscribers.get("alan@example.com").suppressed
