"""The SMTP pool against a real SMTP server (aiosmtpd): throttling, greylisting, SMTPUTF8, pipelining."""

from __future__ import annotations

import collections

import pytest
from click.testing import CliRunner

from newsletter import Newsletter
from newsletter.cli import cli

from . import smtp_server
from .conftest import SECRET, write_config

FAST_RETRIES = "retries = 3\nretry_backoff = 0.05\n"


def people(tmp_path, n: int, *extra: str):
    path = tmp_path / "people.csv"
    path.write_text("email,name\n" + "".join(f"r{i}@example.com,Reader {i}\n" for i in range(n))
                    + "".join(f"{e},\n" for e in extra), encoding="utf-8")
    return path


@pytest.fixture
def relay(tmp_path, monkeypatch, request):
    """An SMTP server and a newsletter configured to send through it, with the given [smtp] extras."""
    options = getattr(request, "param", {})
    controller, inbox = smtp_server.start(smtputf8=options.get("smtputf8", False))
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp", smtp_port=controller.port,
                          extra=options.get("smtp", FAST_RETRIES))
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--config", str(config), *map(str, args)], catch_exceptions=False)

    yield run, inbox, config
    controller.stop()


def received(inbox) -> list[str]:
    return [address for _from, rcpts, _msg in inbox.messages for address in rcpts]


def test_the_pool_sends_on_several_connections_each_recipient_once(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    run("subscribers", "import", people(tmp_path, 350), "--list", "weekly")
    inbox.delay = 0.002
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(received(inbox)) == sorted(f"r{i}@example.com" for i in range(350))
    assert inbox.connections == 4  # four batches of up to 100 in flight, one connection each


def test_a_relay_that_throttles_with_421_gets_everything_after_reconnecting(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    run("subscribers", "import", people(tmp_path, 300), "--list", "weekly")
    inbox.throttle_after = 40
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    got = received(inbox)
    assert len(got) == len(set(got)) == 300
    assert inbox.connections >= 300 // 40  # it came back after every hang-up


def test_greylisting_is_retried_in_the_same_run(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    run("subscribers", "import", people(tmp_path, 30), "--list", "weekly")
    inbox.greylist = True
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(received(inbox)) == sorted(f"r{i}@example.com" for i in range(30))


def test_a_relay_that_keeps_deferring_leaves_rows_pending_for_a_later_run(relay, tmp_path, sample_issue):
    run, inbox, config = relay
    run("subscribers", "import", people(tmp_path, 5), "--list", "weekly")
    inbox.always_busy = True
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1, result.output
    assert "deferred 5" in result.output and "failed 0" in result.output
    status = run("status", sample_issue, "--list", "weekly")
    assert "pending 5" in status.output and "failed 0" in status.output
    with Newsletter.from_config(config) as nl:
        # Not claimed again before their retry time, so a second run right away sends nothing...
        again = nl.sends.send(sample_issue, "weekly")
        assert again.this_run["deferred"] == 0 and again.counts["pending"] == 5
        # ...and once the relay takes mail again and the time has come, the next run delivers them.
        inbox.always_busy = False
        with nl.store.write() as conn:
            conn.exec_driver_sql("UPDATE deliveries SET retry_after = NULL")
        assert nl.sends.send(sample_issue, "weekly").counts["sent"] == 5
    assert len(received(inbox)) == 5


@pytest.mark.parametrize("relay", [{"smtputf8": True}], indirect=True)
def test_a_non_ascii_address_goes_out_with_smtputf8(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    run("subscribers", "import", people(tmp_path, 2, "jürgen@example.com"), "--list", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(received(inbox)) == ["jürgen@example.com", "r0@example.com", "r1@example.com"]
    arrived = zip(inbox.messages, inbox.raw, strict=True)
    raw = next(r for (_f, rcpts, _m), r in arrived if rcpts == ["jürgen@example.com"])
    headers = raw.split(b"\r\n\r\n")[0]
    assert "\r\nTo: jürgen@example.com\r\n".encode() in headers and b"=?" not in headers  # raw UTF-8, no encoded word


def test_a_non_ascii_address_fails_alone_without_smtputf8(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    run("subscribers", "import", people(tmp_path, 2, "jürgen@example.com"), "--list", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "failed: jürgen@example.com: the address is not ASCII and the SMTP server does not offer SMTPUTF8" \
        in result.output
    assert sorted(received(inbox)) == ["r0@example.com", "r1@example.com"]
    again = run("send", sample_issue, "--list", "weekly", "--yes", "--resend-unknown")
    assert "nothing to send" in again.output and len(received(inbox)) == 2  # nothing left in flight


def test_pipelining_sends_and_still_isolates_a_refused_recipient(relay, tmp_path, sample_issue):
    run, inbox, _config = relay
    inbox.pipelining = True
    run("subscribers", "import", people(tmp_path, 20, "refuse-me@example.com"), "--list", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "failed: refuse-me@example.com: 550 5.1.1 mailbox unavailable (at RCPT TO)" in result.output
    counts = collections.Counter(received(inbox))
    assert len(counts) == 20 and set(counts.values()) == {1}
