"""Exit codes and one-line answers that tell the truth, as a wrapper script or cron reads them.

0 only when the send is complete; 1 someone failed, is unknown or deferred; 2 a usage,
configuration or input error; 3 stopped with rows pending (--limit, a lost lease); 130 and 143
stopped by SIGINT and SIGTERM with rows pending, as shells report them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from newsletter import config as config_mod
from newsletter.errors import ConfigError

from .conftest import ROOT, SECRET, ready_sample, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"


def cli(config_path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "SENDGRID_API_KEY": "SG.test-key"}
    return subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config_path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def many(tmp_path, sendgrid_server):
    """A config on the fake SendGrid server, batches of 20, 400 subscribers imported."""
    path = write_config(tmp_path, api_base=sendgrid_server.url, batch_size=20)
    rows = tmp_path / "many.csv"
    rows.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(400)))
    assert cli(path, "subscribers", "import", str(rows), "--list", "weekly").wait(60) == 0
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_send_stopped_by_a_signal_with_rows_pending_exits_as_shells_do_and_says_how_to_resume(
        many, tmp_path, sendgrid_server, sig, code):
    issue = ready_sample(tmp_path)
    sendgrid_server.stall = 0.3
    proc = cli(many, "send", str(issue), "--list", "weekly", "--yes")
    deadline = time.monotonic() + 30
    while not sendgrid_server.received and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert f"stopped by {sig.name}" in out and "pending" in out
    assert f"newsletter send {issue} --list weekly --yes" in out  # how to resume
    sendgrid_server.stall = 0
    finish = cli(many, "send", str(issue), "--list", "weekly", "--yes")
    out, err = finish.communicate(timeout=60)
    assert finish.returncode == 0, err
    assert sorted(sendgrid_server.received) == sorted(f"r{i}@example.com" for i in range(400))


def test_a_send_stopped_at_limit_is_not_reported_as_complete(sg_run, sg_config, tmp_path):
    issue = ready_sample(tmp_path)
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    first = sg_run("send", issue, "--list", "weekly", "--yes", "--limit", "4")
    assert first.exit_code == 3 and "8 pending" in first.output
    rest = sg_run("send", issue, "--list", "weekly", "--yes")
    assert rest.exit_code == 0


def test_to_repeated_sends_a_test_copy_to_each_address(sg_run, sendgrid_server, tmp_path):
    issue = ready_sample(tmp_path)
    result = sg_run("send", issue, "--list", "weekly", "--to", "a@example.com", "--to", "b@example.com")
    assert result.exit_code == 0, result.output
    assert sorted(sendgrid_server.received) == ["a@example.com", "b@example.com"]
    assert "test copy to a@example.com: sent" in result.output and "test copy to b@example.com: sent" in result.output


@pytest.mark.parametrize("key", ["not a key", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"])
def test_a_malformed_webhook_public_key_is_a_config_error_naming_the_key(tmp_path, key):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[sendgrid]\n", f'[sendgrid]\nwebhook_public_key = "{key}"\n'))
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    message = str(info.value)
    assert "[sendgrid] webhook_public_key" in message and str(path) in message and "\n" not in message


def test_a_good_webhook_public_key_loads(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    key = "".join(pem.strip().splitlines()[1:-1])
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[sendgrid]\n", f'[sendgrid]\nwebhook_public_key = "{key}"\n'))
    assert config_mod.load(path).sendgrid.webhook_public_key == key


def test_status_of_a_slug_that_names_no_send_is_an_error_listing_the_known_ones(sg_run, tmp_path):
    issue = ready_sample(tmp_path, "2026-12-03")
    sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    typo = sg_run("status", "specail3", "--list", "weekly")
    assert typo.exit_code == 2
    assert "no send of specail3 to weekly" in typo.output and "2026-12-03" in typo.output
    unsent = ready_sample(tmp_path, "2026-12-10")
    fresh = sg_run("status", unsent, "--list", "weekly")  # a real issue file not sent yet: a plain answer
    assert fresh.exit_code == 0 and "has not been sent to weekly" in fresh.output


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job or nohup starts a process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["preview", "serve"])
def test_preview_and_serve_stop_on_sigint_and_sigterm_however_they_were_started(tmp_path, command, sig):
    import re
    import urllib.request

    from .smtp_server import free_port

    path = write_config(tmp_path)
    port = free_port()
    args = ["preview", str(ready_sample(tmp_path)), "--port", str(port)] if command == "preview" else \
        ["serve", "--port", str(port)]
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)
    try:
        url = f"http://127.0.0.1:{port}/" + ("" if command == "preview" else "healthz")
        deadline = time.monotonic() + 30
        while True:
            try:
                assert urllib.request.urlopen(url, timeout=5).status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if command == "serve":  # uvicorn shuts down gracefully, then ends by the signal it caught, as a server should
        assert proc.returncode in (0, -sig) and "Finished server process" in err, (out, err)
    else:
        assert proc.returncode == 0, (out, err)
    assert not re.search(r"Traceback", err)
