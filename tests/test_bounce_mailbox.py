"""The bounce loop end to end: a real SMTP send with VERP return paths, the reports real MTAs would send
back put in a real Dovecot (IMAP and POP3 on loopback), and `newsletter bounces fetch` reading them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import Newsletter
from newsletter.cli import cli
from newsletter.schema import events, mailbox_messages

from . import bounce_corpus as corpus, dovecot, smtp_server
from .conftest import ROOT, SECRET, wait_for, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"
pytestmark = pytest.mark.skipif(not dovecot.available(), reason="Dovecot is not installed (apt-get install "
                                                                "dovecot-imapd dovecot-pop3d): no mailbox to read")


@pytest.fixture
def server():
    running = dovecot.Dovecot()
    yield running
    running.close()


def mailbox_section(server: dovecot.Dovecot, protocol: str = "imap") -> str:
    port = server.imap_port if protocol == "imap" else server.pop3_port
    return (f'[bounces]\nverp_address = "bounces@news.example.com"\nsoft_limit = 3\n[bounces.mailbox]\n'
            f'protocol = "{protocol}"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            f'username = "{dovecot.USER}"\nbatch = 7\n')


@pytest.fixture
def loop(tmp_path, monkeypatch, server, sample_issue):
    """A send of the sample issue over SMTP; `run` runs the CLI; `sent[address]` is what that person got."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("BOUNCE_MAILBOX_PASSWORD", dovecot.PASSWORD)
    controller, inbox = smtp_server.start()
    config = write_config(tmp_path, backend="smtp", smtp_port=controller.port, extra=mailbox_section(server))

    def run(*args):
        return CliRunner().invoke(cli, ["--config", str(config), *map(str, args)], catch_exceptions=False)

    assert run("subscribers", "import", SAMPLE, "--list", "weekly").exit_code == 0
    assert run("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0
    controller.stop()
    sent = {rcpt[0]: corpus.with_return_path(msg.as_bytes(), mail_from) for mail_from, rcpt, msg in inbox.messages}
    return config, run, sent


def person(config, email):
    with Newsletter.from_config(config) as nl:
        found = nl.subscribers.get(email)
        return found.memberships["weekly"][0], bool(found.suppressed)


def test_each_report_acts_once_nothing_is_deleted_and_a_second_fetch_changes_nothing(loop, server):
    config, run, sent = loop
    reports = [corpus.postfix_unknown_user(sent["alan@example.com"], "alan@example.com"),
               corpus.arf(sent["ada@example.com"], "ada@example.com"),
               corpus.microsoft_dmarc(sent["grace@example.org"], "grace@example.org"),
               corpus.out_of_office(sent["grace@example.org"], "grace@example.org"),
               corpus.exim_mailbox_full(sent["ada@example.com"], "ada@example.com"),
               corpus.spam(), corpus.malformed(),
               corpus.qmail(sent["barbara@example.org"], "barbara@example.org"),
               corpus.huge(sent["edsger@example.com"], "edsger@example.com"),
               corpus.latin1(sent["margaret@example.org"], "margaret@example.org")]
    server.append(reports)
    first = run("bounces", "fetch")
    assert first.exit_code == 1, first.output  # a rejection for the sender's setup: the operator must act
    assert "rejected because of the sender's setup (5.7.515)" in first.output and "grace@example.org" in first.output
    assert person(config, "alan@example.com") == ("bounced", True)
    assert person(config, "ada@example.com") == ("complained", True)
    assert person(config, "grace@example.org") == ("active", False)  # DMARC is our fault, not hers
    for hard in ("barbara@example.org", "edsger@example.com", "margaret@example.org"):
        assert person(config, hard) == ("bounced", True)
    folders = server.folders()
    assert folders["INBOX"] == 0 and folders["newsletter/unparsed"] == 2  # spam and the malformed report
    assert folders["newsletter/processed"] == len(reports) - 2  # moved, never deleted
    before = _state(config)
    again = run("bounces", "fetch")
    assert again.exit_code == 0 and again.output == ""  # quiet when there is nothing
    assert _state(config) == before and server.folders() == folders


def _state(config) -> tuple:
    with Newsletter.from_config(config) as nl, nl.store.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(events)).scalar(),
                conn.execute(sa.select(sa.func.count()).select_from(mailbox_messages)).scalar(),
                sorted(row["email"] for row in nl.store.suppression_list()))


def test_a_report_seen_again_after_a_crash_before_it_was_moved_changes_nothing(loop, server):
    config, run, sent = loop
    report = corpus.postfix_unknown_user(sent["alan@example.com"], "alan@example.com")
    server.append([report])
    assert run("bounces", "fetch").exit_code == 0
    before = _state(config)
    server.append([report])  # the same message again in the inbox, as if the move had not happened
    assert "1 read before" in run("bounces", "fetch").output
    assert _state(config) == before and server.folders()["INBOX"] == 0


def test_soft_bounces_suppress_only_at_the_limit(loop, server):
    config, run, sent = loop
    for count in (1, 2):
        server.append([corpus.exim_mailbox_full(sent["alan@example.com"], "alan@example.com")])
        assert run("bounces", "fetch").exit_code == 0
        assert person(config, "alan@example.com") == ("active", False), count
    server.append([corpus.delayed(sent["alan@example.com"], "alan@example.com")])
    assert run("bounces", "fetch").exit_code == 0
    assert person(config, "alan@example.com") == ("bounced", True)  # the third in the window


def test_pop3_reads_each_message_once_and_leaves_every_one_on_the_server(tmp_path, loop, server):
    config, run, sent = loop
    config.write_text(config.read_text().replace(mailbox_section(server), mailbox_section(server, "pop3")))
    server.append([corpus.gmail_no_such_user(sent["alan@example.com"], "alan@example.com"), corpus.spam()])
    assert run("bounces", "fetch").exit_code == 0
    assert person(config, "alan@example.com") == ("bounced", True)
    before = _state(config)
    assert run("bounces", "fetch").output == "" and _state(config) == before
    assert server.folders()["INBOX"] == 2  # POP3 cannot move; nothing was deleted


def test_a_fetch_killed_mid_way_then_run_again_ends_as_one_run_would(loop, server, tmp_path):
    config, _run, sent = loop
    people = sorted(sent)
    reports = [corpus.postfix_unknown_user(sent[people[i % len(people)]], people[i % len(people)])
               for i in range(240)]
    server.append(reports)
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "BOUNCE_MAILBOX_PASSWORD": dovecot.PASSWORD}
    command = [sys.executable, "-m", "newsletter.cli", "--config", str(config), "bounces", "fetch"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _state(config)[1] >= 20, 60), "the fetch never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _state(config)[1] < 240, "the fetch finished before it was killed"
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    events_count, read, suppressed = _state(config)
    assert read == 240 and events_count == 240  # every message once, every finding once
    assert suppressed == people  # all twelve hard-bounced
    folders = server.folders()
    assert folders["INBOX"] == 0 and folders["newsletter/processed"] == 240


def test_the_scheduler_reads_the_mailbox_every_few_minutes(loop, server):
    import threading

    config, _run, sent = loop
    config.write_text(config.read_text().replace("batch = 7\n", "batch = 7\nevery = 1\n"))
    stop = threading.Event()
    with Newsletter.from_config(config) as nl:
        worker = threading.Thread(target=nl.schedule.run, args=("weekly",), kwargs={"stop": stop}, daemon=True)
        worker.start()
        try:
            server.append([corpus.gmail_no_such_user(sent["alan@example.com"], "alan@example.com")])
            assert wait_for(lambda: person(config, "alan@example.com")[1], 30), "the scheduler never read it"
        finally:
            stop.set()
            worker.join(30)
    assert not worker.is_alive() and server.folders()["INBOX"] == 0


def test_report_status_and_show_give_the_bounces_by_class_and_reason(loop, server, sample_issue):
    _config, run, sent = loop
    server.append([corpus.postfix_unknown_user(sent["alan@example.com"], "alan@example.com"),
                   corpus.microsoft_dmarc(sent["grace@example.org"], "grace@example.org"),
                   corpus.gmail_unauthenticated(sent["ada@example.com"], "ada@example.com"),
                   corpus.exim_mailbox_full(sent["linus@example.com"], "linus@example.com")])
    assert run("bounces", "fetch").exit_code == 1
    report = run("report", sample_issue, "--list", "weekly")
    assert report.exit_code == 0, report.output
    lines = report.output.splitlines()
    assert any("blocked" in line and "5.7.515" in line and "sender's setup" in line for line in lines)
    assert any("bounced" in line and "5.1.1" in line for line in lines)
    assert any("deferred" in line and "5.2.2" in line for line in lines)
    status = run("status", sample_issue, "--list", "weekly")
    assert "mail to 2 people was rejected because of the sender's setup" in status.output
    shown = run("subscribers", "show", "alan@example.com").output
    assert "bounced (issue 2026-12-01): 5.1.1" in shown and "User unknown" in shown


@pytest.mark.parametrize(("protocol", "security"), [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl"),
                                                    ("pop3", "starttls")])
def test_the_mailbox_is_read_over_tls_and_its_certificate_checked(loop, server, monkeypatch, protocol, security):
    config, run, sent = loop
    ports = {("imap", "ssl"): server.imaps_port, ("imap", "starttls"): server.imap_port,
             ("pop3", "ssl"): server.pop3s_port, ("pop3", "starttls"): server.pop3_port}
    section = mailbox_section(server, protocol).replace('security = "none"', f'security = "{security}"')
    section = section.replace(f"port = {server.imap_port if protocol == 'imap' else server.pop3_port}",
                              f"port = {ports[(protocol, security)]}")
    config.write_text(config.read_text().replace(mailbox_section(server), section))
    server.append([corpus.gmail_no_such_user(sent["alan@example.com"], "alan@example.com")])
    untrusted = run("bounces", "fetch")  # the server's certificate is self-signed: refused until trusted
    assert untrusted.exit_code != 0 and "cannot be read" in untrusted.output and "CERTIFICATE" in untrusted.output
    assert person(config, "alan@example.com") == ("active", False)
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    assert run("bounces", "fetch").exit_code == 0
    assert person(config, "alan@example.com") == ("bounced", True)


def test_without_verp_the_report_and_the_returned_copy_name_the_delivery(loop, server):
    config, run, sent = loop
    config.write_text(config.read_text().replace('verp_address = "bounces@news.example.com"\n', ""))
    server.append([corpus.postfix_unknown_user(sent["alan@example.com"], "alan@example.com")])
    assert run("bounces", "fetch").exit_code == 0
    assert person(config, "alan@example.com") == ("bounced", True)
    with Newsletter.from_config(config) as nl:
        [event] = [e for e in nl.subscribers.record("alan@example.com")["events"] if e["kind"] == "bounced"]
    assert event["issue"] == "2026-12-01" and event["list_name"] == "weekly"  # from the copy's X-Newsletter-*


def test_one_fetch_at_a_time_per_mailbox(loop, server):
    config, run, _sent = loop
    with Newsletter.from_config(config) as nl:
        name = f"imap://{dovecot.USER}@127.0.0.1:{server.imap_port}/INBOX"
        with nl.store.lock(f"bounces {name}", "held by the test"):
            busy = run("bounces", "fetch")
    assert busy.exit_code != 0 and "another `bounces fetch` is reading" in busy.output
