"""SendGrid's error paths in the engine: messages too large, 400s naming nobody, stopping in a 429 wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from newsletter import Newsletter
from newsletter.providers import sendgrid as sendgrid_provider

from .conftest import ROOT

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def imported(sg_config):
    with Newsletter.from_config(sg_config) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
    return sg_config


def counts(config) -> dict[str, int]:
    with Newsletter.from_config(config) as nl:
        return nl.sends.status(ROOT / "issues" / "2026-12-01.md", "weekly").counts


def test_a_message_too_large_on_its_own_is_refused_before_anything_is_sent(imported, sg_run, sendgrid_server,
                                                                            sample_issue, monkeypatch):
    monkeypatch.setattr(sendgrid_provider, "MAX_MESSAGE_BYTES", 10_000)  # the sample issue is about 25 KB
    dry = sg_run("send", sample_issue, "--list", "weekly", "--dry-run")
    assert dry.exit_code == 2 and "SendGrid takes at most" in dry.output
    result = sg_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 2 and "shorten the issue" in result.output
    assert sendgrid_server.requests == 0


def test_a_413_even_for_one_recipient_stops_the_send_and_fails_nobody(imported, sg_run, sendgrid_server,
                                                                      sample_issue, tmp_path):
    sg_run("send", sample_issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "dry")
    body = json.loads((tmp_path / "dry" / "2026-12-01-sendgrid-request.json").read_text())
    sendgrid_server.max_body = len(json.dumps({**body, "personalizations": []}))  # SendGrid's own limit is lower
    result = sg_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "413 for a request with a single recipient" in result.output
    assert sendgrid_server.requests <= 6  # halved down to one recipient once, not once per recipient
    state = counts(imported)
    assert (state["failed"], state["pending"], state["in_flight"]) == (0, 12, 0)


def test_a_400_that_names_no_recipient_stops_the_send_and_fails_nobody(imported, sg_run, sendgrid_server,
                                                                        sample_issue):
    sendgrid_server.answer_next(400, errors=[{"message": "Bad Request", "field": None, "help": None}])
    result = sg_run("send", sample_issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "SendGrid rejected the request: Bad Request; nothing was marked failed" in result.output
    assert sendgrid_server.requests == 1
    state = counts(imported)
    assert (state["failed"], state["pending"], state["sent"]) == (0, 12, 0)


@pytest.mark.slow
def test_sigterm_during_a_429_wait_stops_at_once_and_keeps_the_batch_pending(imported, sendgrid_server):
    sendgrid_server.answer_next(429, {"X-RateLimit-Reset": str(int(time.time()) + 120)})
    process = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(imported), "send",
                                str(ROOT / "issues" / "2026-12-01.md"), "--list", "weekly", "--yes"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 30
    while sendgrid_server.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # now in the two-minute wait for the rate limit's reset
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)  # far sooner than the reset
    assert process.returncode == 143, out + err  # stopped by SIGTERM with rows pending
    assert "stopped by SIGTERM with 12 pending" in out and "Traceback" not in err
    assert sendgrid_server.received == []
    state = counts(imported)
    assert (state["pending"], state["in_flight"], state["unknown"]) == (12, 0, 0)


def test_an_answer_that_is_not_http_stops_the_send_and_the_batch_is_unknown(sg_config, sg_run, sample_issue):
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        text = sg_config.read_text()
        sg_config.write_text(text.replace(text.split('api_base = "')[1].split('"')[0], f"http://127.0.0.1:{port}"))
        sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
        result = sg_run("send", sample_issue, "--list", "weekly", "--yes")
    finally:
        listener.close()
    assert result.exit_code == 1 and "answered with something that is not HTTP" in result.output
    assert "Traceback" not in result.output
    state = counts(sg_config)  # the request was written: it may have been taken, so it is not sent again
    assert (state["pending"], state["unknown"], state["failed"]) == (0, 12, 0)
