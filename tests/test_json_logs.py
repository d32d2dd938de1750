"""`--log-format json`: every line a JSON object, and no line naming a person (no address, no link token)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli

from .conftest import SECRET, ready_sample, wait_for, write_config
from .smtp_server import free_port
from .test_metrics import _get, _post, _subscribe
from .webhelpers import Served, WebhookSigner

TOKEN_IN_LINK = re.compile(r"/(confirm|unsubscribe|preferences)/(?!\[token\])[A-Za-z0-9_.~-]{8,}")


def _lines(text: str) -> list[dict]:
    """Every line of `text` parsed as JSON (a line that is not fails the test), in order."""
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
    return records


def _nobody_in(text: str, addresses: list[str]) -> None:
    assert not re.search(r"[^\s\"']@", text), [line for line in text.splitlines() if re.search(r"[^\s\"']@", line)]
    for address in addresses:
        assert address.split("@")[0] not in text
    assert not TOKEN_IN_LINK.search(text), TOKEN_IN_LINK.search(text)


def _rows(folder: Path, people: list[str]) -> Path:
    path = folder / "people.csv"
    path.write_text("email,name\n" + "".join(f"{address},Reader\n" for address in people))
    return path


def test_a_whole_send_in_json_names_nobody(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, _inbox = smtp
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
    people = ["zelda.reader@example.com", "refuse.yusuf@example.org", "quentin.q@example.net"]
    issue = ready_sample(tmp_path)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--log-format", "json", "--config", str(path), *map(str, args)],
                             catch_exceptions=False)

    steps = [run("subscribers", "import", _rows(tmp_path, people), "--list", "weekly"),
             run("send", issue, "--list", "weekly", "--yes", "--metrics-file", tmp_path / "n.prom"),
             run("status", issue, "--list", "weekly"),
             run("subscribers", "add", "not-an-address@", "--list", "weekly"),
             run("send", "--due", "--list", "weekly")]
    assert steps[1].exit_code == 1  # one refused for good
    assert steps[3].exit_code == 2
    text = "\n".join(step.output for step in steps)
    records = _lines(text)
    _nobody_in(text, people)
    assert all({"time", "level", "event"} <= set(r) for r in records)
    summary = next(r for r in records if r["event"].startswith(f"{issue.stem} to weekly: this run sent 2"))
    assert summary["issue"] == issue.stem and summary["list"] == "weekly"
    assert summary["counts"]["sent"] == 2 and summary["counts"]["failed"] == 1
    assert any(r["level"] == "error" and "[address]" in r["event"] for r in records)  # the failure, said without who
    assert any(r["level"] == "error" and r["event"].startswith("error:") for r in records)  # the bad address
    imported = next(r for r in records if r["event"].startswith("rows read 3"))
    assert imported["list"] == "weekly" and imported["counts"] == {
        "read": 3, "added": 3, "updated": 0, "present": 0, "kept_out": 0, "rejected": 0}


def test_a_dry_run_in_json_says_its_issue_list_and_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    runner = CliRunner()
    runner.invoke(cli, ["--config", str(path), "subscribers", "add", "ada@example.com", "--list", "weekly"])
    issue = ready_sample(tmp_path)
    result = runner.invoke(cli, ["--log-format", "json", "--config", str(path), "send", str(issue), "--list",
                                 "weekly", "--dry-run"])
    assert result.exit_code == 0, result.output
    heading = next(r for r in _lines(result.output) if r["event"].startswith("Dry run of"))
    assert heading["issue"] == issue.stem and heading["list"] == "weekly"
    assert heading["counts"]["recipients"] == 1 and heading["counts"]["batches"] == 1


def test_the_default_stays_human(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(path), "subscribers", "add", "ada@example.com", "--list",
                                      "weekly"])
    assert result.exit_code == 0 and not result.output.lstrip().startswith("{")
    failed = CliRunner().invoke(cli, ["--config", str(path), "subscribers", "add", "x@", "--list", "weekly"])
    assert failed.output.startswith("error: ")


def test_serve_in_json_names_nobody_over_subscribe_confirm_leave_and_a_webhook(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_LOG_FORMAT", "json")
    controller, inbox = smtp
    signer, port = WebhookSigner(), free_port()
    path = write_config(tmp_path, base_url=f"http://127.0.0.1:{port}", backend="smtp", smtp_port=controller.port)
    path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"'))
    events = json.dumps([{"email": "hidden.reader@example.com", "timestamp": int(time.time()), "event": "bounce",
                          "type": "bounce", "reason": "550 5.1.1 hidden.reader@example.com unknown",
                          "sg_event_id": "evt-1", "sg_message_id": "m1.filter", "issue": "2026-12-01",
                          "list": "weekly", "subscriber": "1"}]).encode()
    with Served(path, port) as server:
        _subscribe(server.url, "new.reader@example.com")
        assert wait_for(lambda: inbox.messages, 30)
        link = re.search(r"http://127\.0\.0\.1:\d+(/confirm/[^\s\"<>]+)", inbox.messages[0][2].get_body(
            ("plain",)).get_content()).group(1)
        assert _get(server.url, link)[0] == 200  # the page that asks to press the button
        assert _post(server.url, "/webhooks/sendgrid", events, signer.headers(events)) == 200
        assert _post(server.url, "/webhooks/sendgrid", events, WebhookSigner().headers(events)) in (401, 403)
        unsubscribe = urllib.parse.quote(link.replace("/confirm/", "/unsubscribe/"))
        _get(server.url, unsubscribe)
    logged = "\n".join(server.output)  # uvicorn's access log goes to stdout, the rest to stderr
    records = _lines(logged)
    _nobody_in(logged, ["new.reader@example.com", "hidden.reader@example.com"])
    paths = " ".join(r["event"] for r in records)
    assert "/confirm/[token]" in paths and "/webhooks/sendgrid" in paths  # the access log is there, tokens hidden
    assert any(r["level"] == "error" and "webhook refused" in r["event"] for r in records)
