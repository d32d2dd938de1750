"""Kill `newsletter send` with SIGKILL at random moments, again and again, until it finishes.

Whatever the moment, no address may be received twice, and every recipient must end up received
exactly once or reported unknown.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from newsletter import config as config_mod
from newsletter.ledger import Ledger
from newsletter.store import Store

from .conftest import SECRET, write_config

SUBSCRIBERS = 3000


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_sigkill_never_sends_twice_and_never_skips(tmp_path, sendgrid_server, sample_issue, seed):
    rng = random.Random(seed)
    config_path = write_config(tmp_path, api_base=sendgrid_server.url, batch_size=40)
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("email,name\n" + "".join(f"r{i}@example.com,Reader {i}\n" for i in range(SUBSCRIBERS)))
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "SENDGRID_API_KEY": "SG.test-key"}
    base = [sys.executable, "-m", "newsletter.cli", "--config", str(config_path)]
    subprocess.run([*base, "subscribers", "import", str(csv_path), "--list", "weekly"], env=env, check=True,
                   capture_output=True)
    sendgrid_server.stall = 0.05  # requests take a moment after being accepted: kills land mid-flight too
    kills, finished = 0, False
    for _round in range(12):
        proc = subprocess.Popen([*base, "send", str(sample_issue), "--list", "weekly", "--yes"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill at a random moment once requests flow, several times (start-up time varies with the
        # machine's load, so the moment is counted from the first request of this round); the last
        # rounds may run to the end, however slow the machine.
        before = len(sendgrid_server.received)
        deadline = time.monotonic() + 60
        while len(sendgrid_server.received) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # 75 batches of 40, 8 at a time, each held 50 ms by the fake: over 0.45 s, so a first kill
        # within 0.3 s of the first request always lands mid-send.
        patience = rng.uniform(0.0, 0.3) if _round < 8 else 120
        try:
            proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        _out, errors = proc.communicate()
        assert proc.returncode in (0, 1), errors.decode()
        finished = True
        break
    assert finished, "send never finished"
    assert kills >= 1, "no run was killed: the test proved nothing"
    received = sendgrid_server.received
    assert len(received) == len(set(received)), "an address was received twice"
    with Store(config_mod.load(config_path)) as store:
        ledger = Ledger(store, "2026-12-01", "weekly")
        counts = ledger.counts()
        assert counts["pending"] == counts["in_flight"] == counts["failed"] == 0
        assert counts["sent"] + counts["unknown"] == SUBSCRIBERS
        problems = {email for email, state, _e, _a in ledger.problems(limit=SUBSCRIBERS)}
    print(f"kills={kills} sent={counts['sent']} unknown={counts['unknown']}")
    everyone = {f"r{i}@example.com" for i in range(SUBSCRIBERS)}
    # Each recipient was received, or is reported unknown (possibly received, never re-sent).
    assert everyone - set(received) <= problems
    assert len(set(received)) >= counts["sent"]
