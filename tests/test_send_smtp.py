import pytest
from click.testing import CliRunner

from newsletter.cli import cli

from . import smtp_server
from .conftest import ROOT, SECRET, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def smtp(tmp_path, monkeypatch):
    controller, inbox = smtp_server.start()
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--config", str(config), *map(str, args)], catch_exceptions=False)

    yield run, inbox
    controller.stop()


def test_smtp_send_builds_complete_messages(smtp, sample_issue):
    run, inbox = smtp
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    run("subscribers", "add", "eve@example.com", "--list", "weekly", "--name", "Eve\r\nBcc: victim@example.net",
        "--attr", "city=<b>Paris</b> & co")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert len(inbox.messages) == 13, result.output
    assert sorted(r[0] for _f, r, _m in inbox.messages) == sorted(
        [line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:]] + ["eve@example.com"])
    assert inbox.connections <= 4  # at most [smtp] connections, each reused for many messages
    mail_from, _rcpt, msg = next(m for m in inbox.messages if m[1] == ["ada@example.com"])
    assert mail_from == "weekly@example.com"
    assert msg["Subject"] == "The Pipeline Weekly #48: idempotent sends, MJML & the 102 KB limit"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["From"] == "Test Weekly <weekly@example.com>"
    assert msg["Reply-To"] == "editor@example.com"
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    assert msg["List-Id"] == "Test Weekly <weekly.news.example.com>"
    assert msg["List-Unsubscribe"].startswith("<https://news.example.com/unsubscribe/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hello Ada Lovelace," in text and "Hello Ada Lovelace," in html
    unsubscribe = msg["List-Unsubscribe"][1:-1]
    assert unsubscribe in text and unsubscribe in html
    assert "%%" not in text and "%%" not in html
    # A name with CR/LF cannot add a header.
    _f, _r, eve = next(m for m in inbox.messages if m[1] == ["eve@example.com"])
    assert eve["Bcc"] is None
    assert "victim" not in "".join(f"{k}" for k in eve)
    assert eve["To"].addresses[0].addr_spec == "eve@example.com"
    assert "\n" not in str(eve["To"])


def test_smtp_reconnects_when_the_server_drops(smtp, sample_issue):
    run, inbox = smtp
    inbox.drop_after = 5
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    received = [r[0] for _f, r, _m in inbox.messages]
    assert len(received) == len(set(received)) == 12
    assert inbox.connections >= 3


def test_smtp_refused_recipient_fails_alone(smtp, sample_issue):
    run, inbox = smtp
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    run("subscribers", "add", "refuse-me@example.com", "--list", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert len(inbox.messages) == 12
    assert "failed: refuse-me@example.com: 550" in result.output


def test_smtp_server_down_leaves_everything_pending(tmp_path, monkeypatch, sample_issue):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp", smtp_port=smtp_server.free_port())
    runner = CliRunner()
    runner.invoke(cli, ["--config", str(config), "subscribers", "import", str(SAMPLE), "--list", "weekly"])
    result = runner.invoke(cli, ["--config", str(config), "send", str(sample_issue), "--list", "weekly", "--yes"])
    assert result.exit_code == 1
    assert "cannot reach SMTP server" in result.output
    status = runner.invoke(cli, ["--config", str(config), "status", str(sample_issue), "--list", "weekly"])
    assert "pending 12" in status.output


def test_smtp_connection_lost_during_data_is_unknown_not_resent(smtp, sample_issue):
    run, inbox = smtp
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    inbox.hang_up_on = "alan@example.com"
    result = run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "unknown: alan@example.com: connection lost during DATA" in result.output
    assert len(inbox.messages) == 11  # everyone else, over a new connection
    inbox.hang_up_on = ""
    again = run("send", sample_issue, "--list", "weekly", "--yes")
    assert "nothing to send" in again.output and len(inbox.messages) == 11
    resent = run("send", sample_issue, "--list", "weekly", "--yes", "--resend-unknown")
    assert resent.exit_code == 0 and [r for _f, r, _m in inbox.messages][-1] == ["alan@example.com"]


def test_every_line_of_every_message_fits_in_78_columns(smtp, sample_issue, tmp_path):
    run, _inbox = smtp
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    run("subscribers", "add", "long@example.com", "--list", "weekly", "--name", "N" * 200)
    result = run("send", sample_issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "dry", "--limit", "20")
    assert result.exit_code == 0, result.output
    emls = sorted((tmp_path / "dry").glob("*.eml"))
    assert len(emls) == 13
    for path in emls:
        raw = path.read_bytes()
        headers, _, body = raw.partition(b"\r\n\r\n")
        assert max(len(line) for line in body.split(b"\r\n")) <= 78, path.name
        assert b"MIME-Version: 1.0" in headers


def test_every_address_the_dirty_list_accepts_goes_out_with_its_display_name(tmp_path, monkeypatch, sample_issue):
    """Non-ASCII local parts with display names once failed on Python 3.11 ("cannot build the message")."""
    from .test_store import DIRTY

    controller, inbox = smtp_server.start(smtputf8=True)
    try:
        monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
        config = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
        dirty = tmp_path / "dirty.csv"
        dirty.write_text(DIRTY + 'gżegorz@example.pl,Grzegorz,Kraków\r\n"zoë@exämple.de","Zoë ""Z"", Jr.",Graz\r\n'
                         "ascii@exämple.de,Ünal,Ulm\r\n", encoding="utf-8")
        runner = CliRunner()

        def run(*args):
            return runner.invoke(cli, ["--config", str(config), *map(str, args)], catch_exceptions=False)

        assert run("subscribers", "import", dirty, "--list", "weekly").exit_code == 0
        result = run("send", sample_issue, "--list", "weekly", "--yes")
        assert result.exit_code == 0, result.output
        assert "failed 0" in result.output
        import email
        import email.policy

        # Read as UTF-8 (RFC 6532): the server's own parse keeps 8-bit bytes as surrogates.
        to = {rcpt[0]: email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)["To"]
              for (_f, rcpt, _m), raw in zip(inbox.messages, inbox.raw, strict=True)}
        assert len(to) == 10
        assert to["gżegorz@example.pl"].addresses[0].display_name == "Grzegorz"
        assert to["gżegorz@example.pl"].addresses[0].addr_spec == "gżegorz@example.pl"
        assert to["zoë@xn--exmple-cua.de"].addresses[0].display_name == 'Zoë "Z", Jr.'
        assert to["ascii@xn--exmple-cua.de"].addresses[0].display_name == "Ünal"
        assert to["jörg@example.com"].addresses[0].display_name == "Jörg"
    finally:
        controller.stop()
