"""Amazon SES end to end: the CLI sends through boto3's sesv2 client (SigV4, its own serialiser) to a fake
that validates every body against botocore's service model and renders the inline template as SES
does; SNS notifications signed like Amazon SNS's. The provider-wide scenarios are in test_conformance."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod, tokens
from newsletter.cli import cli
from newsletter.ledger import Ledger
from newsletter.pacing import Pacer
from newsletter.placeholders import fill
from newsletter.providers.base import Envelope, Recipient
from newsletter.providers.ses import SesProvider
from newsletter.store import Store
from newsletter.web import create_app
from newsletter.webhooks.ses import SesReceiver

from .conftest import ROOT, SECRET, write_config
from .fake_ses import ACCESS_KEY, SECRET_KEY, FakeSes
from .webhelpers import TOPIC, SnsSigner

SAMPLE = ROOT / "subscribers" / "sample.csv"
PEOPLE = sorted(line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:])


def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> None:
    """AWS credentials from the environment only: no profile or shared file of the machine's, no EC2 lookup."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


def ses_section(server: FakeSes, signer: SnsSigner | None = None, batch: int = 50) -> str:
    pinned = f'sns_certificate_file = "{signer.path}"\n' if signer else ""
    return f"""
[ses]
region = "us-east-1"
endpoint_url = "{server.url}"
configuration_set = "newsletter-events"
batch_size = {batch}
timeout = 2
max_retries = 3
retry_backoff = 0.01
sns_topic_arn = "{TOPIC}"
{pinned}"""


@pytest.fixture
def ses():
    server = FakeSes().start()
    yield server
    server.stop()


@pytest.fixture
def signer(tmp_path):
    return SnsSigner(tmp_path)


@pytest.fixture
def ses_config(tmp_path, monkeypatch, ses, signer):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    aws_env(monkeypatch, tmp_path)
    return write_config(tmp_path, backend="ses", extra=ses_section(ses, signer))


@pytest.fixture
def ses_run(ses_config):
    def invoke(*args: object):
        return CliRunner().invoke(cli, ["--config", str(ses_config), *map(str, args)], catch_exceptions=False)

    assert "added 12" in invoke("subscribers", "import", SAMPLE, "--list", "weekly").output
    return invoke


def counts(path) -> dict[str, int]:
    with Store(config_mod.load(path)) as store:
        return Ledger(store, "2026-12-01", "weekly").counts()


def test_each_entry_gets_its_own_values_link_and_headers_in_one_signed_validated_call(ses_run, ses, sample_issue):
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(ses.received) == PEOPLE and ses.requests == 1 and ses.account_reads == 1
    assert ses.render_failures == []
    signer = tokens.unsubscribe_signer(SECRET.encode())
    for message in ses.messages:
        link = message["headers"]["List-Unsubscribe"]
        claims = signer.check(link.strip("<>").rsplit("/", 1)[1])
        assert claims.list_name == "weekly" and claims.for_address(message["to"])
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["headers"]["X-Newsletter-Issue"] == "2026-12-01"
        assert message["tags"]["issue"] == "2026-12-01" and message["tags"]["subscriber"].isdigit()
        assert link.strip("<>") in message["html"] and "{{" not in message["html"] + message["text"]
        assert message["configuration_set"] == "newsletter-events"
    ada = next(m for m in ses.messages if m["to"] == "ada@example.com")
    assert ada["to_header"] == "Ada Lovelace <ada@example.com>"
    assert "Ada Lovelace" in ada["text"] and "Ada Lovelace" in ada["html"]


def test_the_message_ses_builds_is_exactly_the_issue_filled_for_that_recipient(ses_config, ses, tmp_path):
    """Braces and backslashes of the issue (CSS, a template shown as an example) and a subscriber's own
    `{{…}}`, `<b>` and backslashes all come out as written: nothing is read as SES's syntax."""
    nl = Newsletter.from_config(ses_config)
    issue = tmp_path / "issues" / "braces.md"
    issue.parent.mkdir(exist_ok=True)
    issue.write_text("---\nsubject: 'Hi %%name%% {{subject}} \\\\ }'\ndate: 2026-12-01\n---\n\n"
                     "Write `{{name}}` or `{{{raw}}}` and a path `C:\\{{x}}\\` for %%name|friend%}%.\n")
    rendered = nl.issues.render(issue)
    envelope = Envelope(rendered, "weekly@example.com", "Wöchentlich", "", "Weekly <weekly.example.com>", "braces")
    values = {"name": "Eve {{h0}} <b>\\{{ob}}</b> }}}", "email": "eve@example.com"}
    provider = SesProvider(nl.config.ses, max_in_flight=1)
    [result] = provider.send(envelope, [Recipient(1, "eve@example.com", "Eve", values, "")])
    assert result.status == "sent" and ses.render_failures == []
    [message] = ses.messages
    assert message["html"] == fill(rendered.html, values, html_escape=True)
    assert message["text"] == fill(rendered.text, values, html_escape=False)
    assert message["subject"] == fill(rendered.subject, values, html_escape=False)
    assert message["from"] == "=?utf-8?q?W=C3=B6chentlich?= <weekly@example.com>"
    provider.close()
    nl.close()


def test_the_accounts_rate_from_getaccount_paces_the_send(ses_config, ses, sample_issue):
    ses.max_send_rate = 14.0
    nl = Newsletter.from_config(ses_config)
    provider = SesProvider(nl.config.ses)
    pacer = Pacer()
    envelope = Envelope(nl.issues.render(sample_issue), "weekly@example.com", "", "", "Weekly <w.example.com>", "x")
    provider.prepare(pacer)  # once, before the first batch
    assert pacer.max_rate == 14.0 and ses.account_reads == 1
    provider.send(envelope, [Recipient(1, "ada@example.com", "", {}, "")], pacer)
    provider.send(envelope, [Recipient(2, "alan@example.com", "", {}, "")], pacer)
    assert ses.account_reads == 1 and ses.requests == 2
    provider.close()
    nl.close()


def test_an_address_on_the_suppression_list_fails_alone_and_is_suppressed_here(ses_run, ses_config, ses,
                                                                                  sample_issue):
    ses.statuses["alan@example.com"] = ("MESSAGE_REJECTED", "Address is on the account-level suppression list")
    ses.statuses["grace@example.org"] = ("MESSAGE_REJECTED", "Message contains a virus")
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 1
    assert (counts(ses_config)["sent"], counts(ses_config)["failed"]) == (10, 2)
    nl = Newsletter.from_config(ses_config)
    assert nl.subscribers.get("alan@example.com").suppressed
    assert not nl.subscribers.get("grace@example.org").suppressed  # the message's fault, not the address's
    nl.close()


def test_throttled_entries_are_tried_again_after_a_pause_and_nobody_gets_two(ses_run, ses_config, ses, sample_issue):
    ses.entry_script.extend(["ACCOUNT_THROTTLED", "TRANSIENT_FAILURE", "ACCOUNT_THROTTLED"])
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(ses.received) == PEOPLE and ses.requests == 2
    assert len(ses.bodies[1]["BulkEmailEntries"]) == 3  # only those SES did not take
    assert counts(ses_config)["sent"] == 12


def test_a_daily_quota_used_up_stops_cleanly_with_the_rest_pending_and_says_when(ses_run, ses_config, ses,
                                                                                 sample_issue):
    ses.max_24_hour_send = 5
    result = ses_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "24-hour sending quota of 5 is used up" in result.output
    assert "UTC" in result.output and "Traceback" not in result.output
    assert counts(ses_config)["sent"] == 5 and counts(ses_config)["pending"] == 7
    again = ses_run("send", sample_issue, "--list", "weekly", "--yes")  # the quota is known used up: nothing sent
    assert again.exit_code == 1 and ses.requests == 1
    ses.max_24_hour_send, ses.sent_24h = -1, 0  # a day later
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(ses.received) == PEOPLE


def test_sending_paused_for_the_account_stops_and_marks_nobody(ses_run, ses_config, ses, sample_issue):
    ses.entry_script.extend(["SUCCESS"] + ["ACCOUNT_SENDING_PAUSED"] * 11)
    result = ses_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "ACCOUNT_SENDING_PAUSED" in result.output and "nobody was marked" in result.output
    assert counts(ses_config)["failed"] == 0 and counts(ses_config)["pending"] == 11


def test_a_refused_call_stops_with_ses_words_and_marks_nobody(ses_run, ses_config, ses, sample_issue):
    ses.answer_next(400, body={"message": "Email address is not verified."})
    result = ses_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "SES refused the request: BadRequestException: Email address is not" in \
        result.output
    assert counts(ses_config)["pending"] == 12


def test_wrong_credentials_are_refused_by_the_signature_check_and_never_shown(ses_run, ses_config, ses, sample_issue,
                                                                              monkeypatch, tmp_path):
    aws_env(monkeypatch, tmp_path, secret="a-guessed-secret")
    result = ses_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0 and "InvalidSignatureException" in result.output
    assert "a-guessed-secret" not in result.output and counts(ses_config)["pending"] == 12


def test_no_credentials_at_all_is_one_line_before_anything_is_claimed(ses_run, ses_config, sample_issue, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = ses_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code != 0 and "no AWS credentials found" in result.output
    assert "Traceback" not in result.output and counts(ses_config).get("sent", 0) == 0


def test_a_mailbox_ses_cannot_take_fails_alone_and_an_idn_domain_goes_as_punycode(ses_run, ses_config, ses,
                                                                                  sample_issue):
    assert ses_run("subscribers", "add", "zoë@example.com", "--list", "weekly").exit_code == 0
    assert ses_run("subscribers", "add", "li@bücher.example", "--list", "weekly").exit_code == 0
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 1
    assert "li@xn--bcher-kva.example" in ses.received and len(ses.received) == 13
    assert (counts(ses_config)["sent"], counts(ses_config)["failed"]) == (13, 1)


def test_the_dry_run_writes_the_exact_parameters_without_any_secret(ses_run, ses, sample_issue, tmp_path):
    result = ses_run("send", sample_issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0 and SECRET_KEY not in result.output and ses.requests == 0
    raw = (tmp_path / "out" / "2026-12-01-ses-request.json").read_text()
    assert SECRET_KEY not in raw and ACCESS_KEY not in raw
    from botocore.loaders import Loader
    from botocore.model import ServiceModel
    from botocore.validate import ParamValidator

    model = ServiceModel(Loader().load_service_model("sesv2", "service-2"), "sesv2")
    params = json.loads(raw)
    assert not ParamValidator().validate(params, model.operation_model("SendBulkEmail").input_shape).has_errors()
    assert sorted(e["Destination"]["ToAddresses"][0].rpartition("<")[2].rstrip(">")
                  for e in params["BulkEmailEntries"]) == PEOPLE


# -- the SNS webhook ---------------------------------------------------------------------------------------


def bounce(email: str, kind: str = "Permanent", sub: str = "General") -> dict:
    return {"eventType": "Bounce",
            "bounce": {"bounceType": kind, "bounceSubType": sub, "timestamp": "2026-12-01T12:00:00.000Z",
                       "bouncedRecipients": [{"emailAddress": email, "diagnosticCode": "smtp; 550 5.1.1 unknown"}]},
            "mail": {"messageId": "0100-m1", "destination": [email], "timestamp": "2026-12-01T11:59:00.000Z",
                     "tags": {"issue": ["2026-12-01"], "list": ["weekly"]}}}


@pytest.fixture
def hooks(ses_run, ses_config):
    nl = Newsletter.from_config(ses_config)
    yield TestClient(create_app(nl), base_url="https://news.example.com"), nl
    nl.close()


@pytest.mark.parametrize(("event", "status", "suppressed"), [
    (bounce("alan@example.com"), "bounced", True),
    (bounce("alan@example.com", sub="OnAccountSuppressionList"), "bounced", True),
    (bounce("alan@example.com", kind="Transient", sub="MailboxFull"), "active", False),
    (bounce("alan@example.com", kind="Transient", sub="ContentRejected"), "active", False),
    ({"notificationType": "Complaint", "mail": {"messageId": "m", "destination": ["alan@example.com"],
                                                "headers": [{"name": "X-Newsletter-List", "value": "weekly"}]},
      "complaint": {"complainedRecipients": [{"emailAddress": "alan@example.com"}], "complaintFeedbackType": "abuse",
                    "timestamp": "2026-12-01T12:00:00Z"}}, "complained", True),
    ({"eventType": "Complaint", "mail": {"destination": ["alan@example.com"]},
      "complaint": {"complainedRecipients": [{"emailAddress": "alan@example.com"}],
                    "complaintFeedbackType": "not-spam"}}, "active", False),
    ({"eventType": "Open", "mail": {"destination": ["alan@example.com"]}, "open": {"timestamp": "2026-12-01T12:00Z"}},
     "active", False),
])
def test_each_event_reaches_the_consent_rules_and_the_senders_own_failures_never_suppress(
        hooks, signer, event, status, suppressed):
    client, nl = hooks
    answer = client.post("/webhooks/ses", content=signer.notification(event))
    assert answer.status_code == 200
    person = nl.subscribers.get("alan@example.com")
    assert person.memberships["weekly"][0] == status and bool(person.suppressed) == suppressed


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_are_verified(hooks, signer, version):
    client, nl = hooks
    body = signer.notification(bounce("alan@example.com"), version=version)
    assert client.post("/webhooks/ses", content=body).status_code == 200
    assert nl.subscribers.get("alan@example.com").suppressed


@pytest.mark.parametrize("change", ["topic", "signature", "certificate", "version"])
def test_a_message_not_signed_for_our_topic_is_refused_and_changes_nothing(hooks, signer, tmp_path, change):
    client, nl = hooks
    message = signer.message(Message=json.dumps(bounce("alan@example.com")),
                             topic=TOPIC.replace("newsletter", "someone-else") if change == "topic" else TOPIC)
    if change == "signature":
        message["Message"] = json.dumps(bounce("grace@example.org"))  # the signed text was changed
    if change == "certificate":
        message = SnsSigner(tmp_path / "..").message(Message=json.dumps(bounce("alan@example.com")))
    if change == "version":
        message["SignatureVersion"] = "3"
    answer = client.post("/webhooks/ses", content=json.dumps(message).encode())
    assert answer.status_code == 403
    assert not nl.subscribers.get("alan@example.com").suppressed
    assert not nl.subscribers.get("grace@example.org").suppressed


def test_a_subscription_is_confirmed_only_for_our_topic_and_only_on_an_sns_host(ses_config, signer):
    nl = Newsletter.from_config(ses_config)
    visited: list[str] = []
    receiver = SesReceiver(nl.config.ses, get=lambda url: visited.append(url) or b"<ok/>")
    nl.webhooks.receivers["ses"] = receiver
    confirm = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=t&Token=abc"
    ours = signer.message("SubscriptionConfirmation", SubscribeURL=confirm, Token="abc", Message="confirm")
    assert nl.webhooks.receive("ses", json.dumps(ours).encode(), {}) == (0, {})
    assert visited == [confirm]
    from newsletter.errors import WebhookError

    theirs = signer.message("SubscriptionConfirmation", SubscribeURL=confirm, Token="abc", Message="confirm",
                            topic=TOPIC + "-other")
    elsewhere = signer.message("SubscriptionConfirmation", SubscribeURL="https://evil.example.com/?x=1", Token="abc",
                               Message="confirm")
    for message in (theirs, elsewhere):
        with pytest.raises(WebhookError):
            nl.webhooks.receive("ses", json.dumps(message).encode(), {})
    assert visited == [confirm]
    nl.close()


def test_the_signing_certificate_is_fetched_only_from_sns_over_https_and_once(ses_run, ses_config, signer):
    nl = Newsletter.from_config(ses_config)
    settings = nl.config.ses.__class__(**{**nl.config.ses.__dict__, "sns_certificate_file": ""})
    fetched: list[str] = []
    receiver = SesReceiver(settings, get=lambda url: fetched.append(url) or signer.pem)
    nl.webhooks.receivers["ses"] = receiver
    for email in ("alan@example.com", "grace@example.org"):
        nl.webhooks.receive("ses", signer.notification(bounce(email)), {})
    assert fetched == ["https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"]
    from newsletter.errors import WebhookError

    forged = signer.message(Message=json.dumps(bounce("ada@example.com")))
    for url in ("http://sns.us-east-1.amazonaws.com/cert.pem", "https://sns.us-east-1.amazonaws.com.evil.io/c.pem",
                "https://evil.example.com/sns.us-east-1.amazonaws.com.pem"):
        forged["SigningCertURL"] = url
        with pytest.raises(WebhookError):
            nl.webhooks.receive("ses", json.dumps(forged).encode(), {})
    assert len(fetched) == 1 and not nl.subscribers.get("ada@example.com").suppressed
    nl.close()


def test_without_a_topic_configured_every_notification_is_refused(ses_config, signer):
    ses_config.write_text(ses_config.read_text().replace(f'sns_topic_arn = "{TOPIC}"', 'sns_topic_arn = ""'))
    nl = Newsletter.from_config(ses_config)
    client = TestClient(create_app(nl), base_url="https://news.example.com")
    answer = client.post("/webhooks/ses", content=signer.notification(bounce("alan@example.com")))
    assert answer.status_code == 403
    nl.close()


def test_an_old_notification_is_refused(hooks, signer):
    client, nl = hooks
    body = signer.notification(bounce("alan@example.com"), at=time.time() - 7200)
    assert client.post("/webhooks/ses", content=body).status_code == 403
    assert not nl.subscribers.get("alan@example.com").suppressed


def test_a_batch_is_several_calls_at_once_and_one_refused_keeps_the_others_results(ses_config, ses, sample_issue):
    nl = Newsletter.from_config(ses_config)
    provider = SesProvider(nl.config.ses.__class__(**{**nl.config.ses.__dict__, "batch_size": 10}))
    envelope = Envelope(nl.issues.render(sample_issue), "weekly@example.com", "", "", "Weekly <w.example.com>", "x")
    people = [Recipient(i, f"reader{i}@example.org", "", {}, "") for i in range(30)]
    assert provider.max_batch == 100 and len(provider.send(envelope, people)) == 30 and ses.requests == 3
    ses.answer_next(400, body={"message": "Illegal header value"})  # one of the next three calls, whichever is first
    from newsletter.errors import ProviderRejected

    with pytest.raises(ProviderRejected) as refused:
        provider.send(envelope, people)
    assert len(refused.value.partial) == 20 and {r.status for r in refused.value.partial} == {"sent"}
    assert len(ses.received) == 50
    provider.close()
    nl.close()


def test_the_accounts_rate_is_read_before_the_first_batch_and_sizes_every_batch(ses_run, ses_config, ses, sample_issue,
                                                                                 tmp_path):
    ses.max_send_rate = 20.0
    many = tmp_path / "many.csv"
    many.write_text("email\n" + "".join(f"reader{i}@example.org\n" for i in range(48)))
    assert ses_run("subscribers", "import", many, "--list", "weekly").exit_code == 0
    assert ses_run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    assert len(ses.received) == len(set(ses.received)) == 60 and ses.account_reads == 1
    assert max(len(body["BulkEmailEntries"]) for body in ses.bodies) <= 20  # a second's worth, from the first
