"""The bounce loop's reading: VERP return paths on every SMTP message, and each report shape real MTAs
send (built around a message the project really sent) read and classified by the one table."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from newsletter import config as config_mod, tokens
from newsletter.bounces import classify, read
from newsletter.cli import cli
from newsletter.statuses import BounceClass

from . import bounce_corpus as corpus, smtp_server
from .conftest import ROOT, SECRET, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"
VERP = "bounces@news.example.com"


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    """Every message one real SMTP send of the sample issue put on the wire, with its envelope sender."""
    tmp_path = tmp_path_factory.mktemp("sent")
    controller, inbox = smtp_server.start()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port,
                        extra=f'[bounces]\nverp_address = "{VERP}"\ncomplaint_address = "fbl@news.example.com"\n')
    (tmp_path / "issues").mkdir(exist_ok=True)
    issue = tmp_path / "issues" / "2026-12-01.md"
    issue.write_text((ROOT / "issues" / "2026-12-01.md").read_text())

    def run(*args):
        return CliRunner().invoke(cli, ["--config", str(path), *map(str, args)], catch_exceptions=False)

    assert run("subscribers", "import", SAMPLE, "--list", "weekly").exit_code == 0
    assert run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    controller.stop()
    messages = {rcpt[0]: (mail_from, corpus.with_return_path(msg.as_bytes(), mail_from))
                for mail_from, rcpt, msg in inbox.messages}
    yield config_mod.load(path), messages
    monkeypatch.undo()


def test_every_smtp_message_has_its_own_signed_return_path_and_the_feedback_headers(sent):
    _config, messages = sent
    paths = tokens.ReturnPath(VERP, SECRET.encode())
    seen = set()
    for mail_from, raw in messages.values():
        assert mail_from.startswith("bounces+") and mail_from.endswith("@news.example.com") and len(mail_from) < 80
        subscriber, digest = paths.find(mail_from)
        assert digest == tokens.issue_digest("2026-12-01")
        seen.add(subscriber)
        message = corpus._original(raw)
        assert message["Feedback-ID"] == "2026-12-01:weekly:newsletter:example.com"
        assert message["CFBL-Address"] == "fbl@news.example.com; report=arf"
        assert message["X-Newsletter-Subscriber"] == str(subscriber) and message["X-Newsletter-Issue"] == "2026-12-01"
    assert len(seen) == len(messages) == 12  # one delivery, one token
    assert paths.find(mail_from.replace("bounces+", "bounces+a")) is None  # altered: not ours
    assert tokens.ReturnPath(VERP, b"another secret").find(mail_from) is None


@pytest.mark.parametrize(("build", "kind", "status"), [
    (corpus.postfix_unknown_user, BounceClass.HARD, "5.1.1"),
    (corpus.gmail_no_such_user, BounceClass.HARD, "5.1.1"),
    (corpus.microsoft_no_domain, BounceClass.HARD, "5.1.10"),
    (corpus.qmail, BounceClass.HARD, "5.1.1"),
    (corpus.sendmail, BounceClass.HARD, "5.1.1"),
    (corpus.latin1, BounceClass.HARD, "5.1.1"),
    (corpus.huge, BounceClass.HARD, "5.1.1"),
    (corpus.exim_mailbox_full, BounceClass.SOFT, "5.2.2"),
    (corpus.delayed, BounceClass.SOFT, "4.4.1"),
    (corpus.gmail_unauthenticated, BounceClass.SENDER, "5.7.26"),
    (corpus.microsoft_dmarc, BounceClass.SENDER, "5.7.515"),
    (corpus.yahoo_policy, BounceClass.SENDER, "5.7.9"),
    (corpus.arf, BounceClass.COMPLAINT, ""),
])
def test_each_report_shape_is_classified_and_names_its_delivery(sent, build, kind, status):
    _config, messages = sent
    raw = messages["alan@example.com"][1]
    report = read(build(raw, "alan@example.com"))
    assert report.kind == kind
    assert [(f.kind, f.email, f.status) for f in report.findings] == [(kind, "alan@example.com", status)]
    assert report.findings[0].diagnostic or kind == BounceClass.COMPLAINT
    subscriber, digest = tokens.ReturnPath(VERP, SECRET.encode()).find(report.headers)
    assert digest == tokens.issue_digest("2026-12-01")
    assert str(subscriber) == corpus._original(raw)["X-Newsletter-Subscriber"]


@pytest.mark.parametrize(("build", "kind"), [
    (corpus.out_of_office, BounceClass.AUTO_REPLY),
    (corpus.challenge, BounceClass.AUTO_REPLY),
    (lambda raw, who: corpus.arf(raw, who, feedback_type="not-spam"), BounceClass.AUTO_REPLY),
    (lambda raw, who: corpus.spam(), BounceClass.UNKNOWN),
    (lambda raw, who: corpus.malformed(), BounceClass.UNKNOWN),
])
def test_what_is_not_a_bounce_is_ignored_or_kept_for_a_person(sent, build, kind):
    _config, messages = sent
    report = read(build(messages["alan@example.com"][1], "alan@example.com"))
    assert report.kind == kind and report.findings == ()
    assert (report.why != "") == (kind == BounceClass.UNKNOWN)


@pytest.mark.parametrize(("status", "diagnostic", "kind"), [
    ("5.7.1", "550 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org", "sender"),
    ("5.0.0", "550 Relay access denied", "sender"),
    ("5.1.1", "550 5.1.1 rejected: message looks like spam", "sender"),  # the sender's words win over 5.1.1
    ("5.0.0", "550 No such user here", "hard"),
    ("", "550 Requested action not taken: mailbox unavailable", "hard"),
    ("5.0.0", "552 Mailbox quota exceeded", "soft"),
    ("5.4.4", "554 5.4.4 unable to route", "soft"),  # permanent, cause unclear: counted, not suppressed at once
    ("4.2.0", "421 Try again later", "soft"),
    ("5.2.1", "550 5.2.1 mailbox disabled", "hard"),
    ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "sender"),
])
def test_the_class_table(status, diagnostic, kind):
    assert classify(status, diagnostic)[0] == kind


@pytest.mark.parametrize(("extra", "says"), [
    ('[bounces]\nverp_address = "bounces"\n', "[bounces] verp_address: 'bounces' is not an address"),
    ('[bounces.mailbox]\nhost = "mail.example.com"\nsecurity = "none"\n', "only for a mailbox on this machine"),
    ('[bounces.mailbox]\nprotocol = "smtp"\n', "[bounces.mailbox] protocol: must be one of imap, pop3"),
    ('[bounces.mailbox]\nfolders = "x"\n', "[bounces.mailbox] folders: unknown key"),
])
def test_a_bad_bounces_setting_is_one_line_naming_it(tmp_path, extra, says):
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match=None) as error:
        config_mod.load(write_config(tmp_path, extra=extra))
    assert says in str(error.value) and "\n" not in str(error.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000) | st.text(max_size=3000).map(lambda t: ("From: MAILER-DAEMON@x\r\nSubject: "
                                                                         "Undelivered\r\nContent-Type: multipart/"
                                                                         "report; report-type=delivery-status\r\n\r\n"
                                                                         + t).encode("utf-8", "surrogatepass")))
def test_no_message_makes_the_reader_raise(raw):
    report = read(raw)
    assert report.kind in set(BounceClass)
    assert all(f.kind in set(BounceClass) for f in report.findings)
