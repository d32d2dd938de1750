"""The engine when the infrastructure misbehaves: lost workers, stopped processes, signals, garbled answers.

Each test reproduces a failure found by trying the product from outside: a worker whose lease was
taken while it lived on, a process stopped past its lease, two SIGTERMs in a row, an answer that
is not HTTP after the request went out, a 408.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import Newsletter
from newsletter.cli import cli, stop_on_signals
from newsletter.ledger import LeaseLost, Ledger
from newsletter.sql import now

from . import smtp_server
from .conftest import SECRET, ready_sample, wait_for, write_config
from .fake_provider import FakeProvider

LEASE = 2


def people(folder: Path, n: int, prefix: str = "p") -> Path:
    path = folder / "people.csv"
    path.write_text("email\n" + "".join(f"{prefix}{i}@example.com\n" for i in range(n)))
    return path


def in_thread(call, seconds: float):
    """Run `call` in a thread and return its result, or fail when it has not returned within `seconds`."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


@pytest.fixture
def lease_config(tmp_path, monkeypatch, store_url):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, extra=f"\n[send]\nlease = {LEASE}\n")
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    ready_sample(tmp_path)
    return path


def worker_a_claims_10_of_30(nl: Newsletter, folder: Path):
    """30 members; worker A starts the send and claims the first 10. (mailing, A's ledger, A's id)"""
    nl.subscribers.import_csv(people(folder, 30), "weekly")
    mailing = nl.sends.mailing(folder / "issues" / "2026-12-01.md", "weekly")
    a = Ledger(nl.store, mailing.rendered.slug, "weekly")
    a.start(mailing.rendered.subject)
    wa = a.register()
    assert len(a.claim(wa, 1, 10, LEASE)[0]) == 10
    return mailing, a, wa


def test_a_worker_found_lost_claims_nothing_more_and_the_list_completes_once(lease_config, tmp_path):
    fake = FakeProvider(max_batch=10)
    with Newsletter.from_config(lease_config, provider_factory=fake.factory) as nl:
        mailing, a, wa = worker_a_claims_10_of_30(nl, tmp_path)
        # Worker B's clock is ahead by more than a lease (or A's heartbeat stalled): A looks gone,
        # and B turns A's rows into unknown.
        b = Ledger(nl.store, mailing.rendered.slug, "weekly", clock=lambda: now() + dt.timedelta(seconds=3 * LEASE))
        assert b.recover(LEASE) == 10
        # A lives on, has not heartbeat since, and must not claim again: its lease is gone.
        with pytest.raises(LeaseLost):
            a.claim(wa, 2, 10, LEASE)
        # A dies here. The next send ends, sends the 20 nobody had, and reports A's 10 unknown.
        report = in_thread(lambda: nl.sends.send(mailing), 30)
        assert report.counts["sent"] == 20 and report.counts["unknown"] == 10 and report.exit_code == 1
        # A had handed nothing over: re-sending the unknown completes the list, nobody twice.
        again = in_thread(lambda: nl.sends.send(mailing, resend_unknown=True), 30)
        assert again.counts["sent"] == 30 and again.exit_code == 0
    received = collections.Counter(fake.sent)
    assert len(received) == 30 and set(received.values()) == {1}


def test_rows_left_in_flight_by_a_lost_worker_are_recovered_and_the_next_send_ends(lease_config, tmp_path):
    fake = FakeProvider(max_batch=10)
    with Newsletter.from_config(lease_config, provider_factory=fake.factory) as nl:
        mailing, _a, wa = worker_a_claims_10_of_30(nl, tmp_path)
        # Another worker marked A lost but did not see A's claim (PostgreSQL: the claim committed
        # after its update's snapshot); then A was killed. Its rows sit in flight under a lost worker.
        with nl.store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE workers SET state = 'lost' WHERE id = :w"), {"w": wa})
    status = CliRunner().invoke(cli, ["--config", str(lease_config), "status", "2026-12-01", "--list", "weekly"])
    assert "in_flight 10" in status.output
    assert f"10 in flight held by worker {wa}" in status.output and "gone" in status.output, status.output
    with Newsletter.from_config(lease_config, provider_factory=fake.factory) as nl:
        report = in_thread(lambda: nl.sends.send(mailing), 30)
        assert report.counts["sent"] == 20 and report.counts["unknown"] == 10 and report.counts["in_flight"] == 0
        again = in_thread(lambda: nl.sends.send(mailing, resend_unknown=True), 30)
        assert again.counts["sent"] == 30 and again.exit_code == 0
    assert sorted(collections.Counter(fake.sent).values()) == [1] * 30


def test_the_end_of_send_wait_for_a_live_worker_is_bounded(lease_config, tmp_path):
    fake = FakeProvider(max_batch=10)
    with Newsletter.from_config(lease_config, provider_factory=fake.factory) as nl:
        mailing, a, wa = worker_a_claims_10_of_30(nl, tmp_path)
        alive = threading.Event()

        def beat() -> None:  # A lives, renews its lease, and never answers (a provider call that hangs)
            while not alive.wait(LEASE / 4):
                a.heartbeat(wa, 0)

        threading.Thread(target=beat, daemon=True).start()
        try:
            started = time.monotonic()
            report = in_thread(lambda: nl.sends.send(mailing), 10 * LEASE)
            waited = time.monotonic() - started
        finally:
            alive.set()
    assert report.counts["sent"] == 20 and report.counts["in_flight"] == 10
    assert report.exit_code == 3  # not finished: another worker still holds rows
    assert "held by another worker" in report.stopped
    assert waited < 4 * LEASE + 2


@pytest.fixture
def slow_smtp(tmp_path, monkeypatch):
    controller, inbox = smtp_server.start()
    inbox.delay = 0.03  # a distant relay: each message takes about 0.1 s
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp", smtp_port=controller.port,
                          extra=f"\n[send]\nlease = {LEASE}\n")
    ready_sample(tmp_path)
    yield config, inbox
    controller.stop()


def cli_process(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NEWSLETTER_SECRET": SECRET})


def test_a_worker_stopped_past_its_lease_sends_nothing_once_resumed(slow_smtp, tmp_path):
    config, inbox = slow_smtp
    with Newsletter.from_config(config) as nl:
        nl.subscribers.import_csv(people(tmp_path, 200), "weekly")
    proc = cli_process(config, "send", str(tmp_path / "issues" / "2026-12-01.md"), "--list", "weekly", "--yes")
    try:
        assert wait_for(lambda: len(inbox.messages) >= 5, 30)
        # Stopped outside a write transaction (a stopped SQLite writer would block everyone).
        for _try in range(50):
            proc.send_signal(signal.SIGSTOP)
            if not _write_locked(tmp_path / "newsletter.db"):
                break
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        time.sleep(LEASE + 1)  # past its lease; what was on the wire has arrived
        with Newsletter.from_config(config) as nl:
            ledger = Ledger(nl.store, "2026-12-01", "weekly")
            ledger.recover(LEASE)  # another worker finds it gone and takes its rows
            assert not ledger.live_workers(LEASE)
            taken = len(inbox.messages)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert len(inbox.messages) == taken, out + err  # nothing more went out once its rows were taken
    assert "lease" in out + err and "Traceback" not in err


@pytest.mark.parametrize("moment", [0.5, 0.8])
def test_an_smtp_send_killed_mid_way_leaves_at_most_one_unknown_per_connection(slow_smtp, tmp_path, moment):
    config, inbox = slow_smtp
    config.write_text(config.read_text().replace("[smtp]", "[smtp]\nconnections = 3"))
    with Newsletter.from_config(config) as nl:
        nl.subscribers.import_csv(people(tmp_path, 300), "weekly")
    proc = cli_process(config, "send", str(tmp_path / "issues" / "2026-12-01.md"), "--list", "weekly", "--yes")
    try:
        assert wait_for(lambda: len(inbox.messages) >= 10, 30)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    time.sleep(0.3)  # a body already on the wire arrives
    with Newsletter.from_config(config) as nl:
        report = nl.sends.send(tmp_path / "issues" / "2026-12-01.md", "weekly")
        with nl.store.engine.connect() as conn:
            unknown = {r[0] for r in conn.exec_driver_sql(
                "SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE d.state = 'unknown'")}
    received = collections.Counter(rcpt for _sender, rcpts, _msg in inbox.messages for rcpt in rcpts)
    assert len(unknown) <= 3, unknown  # only what was on each connection's wire
    assert max(received.values()) == 1
    assert set(received) | unknown == {f"p{i}@example.com" for i in range(300)}
    assert report.counts["sent"] + report.counts["unknown"] == 300


def _write_locked(database: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(database, timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def test_two_sigterms_in_a_row_stop_the_scheduler(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path)
    for _round in range(6):  # the hang came one run in twelve: the second signal has to land mid-handler
        proc = cli_process(config, "scheduler", "--list", "weekly")
        try:
            assert wait_for(lambda p=proc: p.poll() is not None or _started(tmp_path), 30)
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        for lock in tmp_path.glob("newsletter.db*.lock"):
            lock.unlink()


def _started(folder: Path) -> bool:
    return any(folder.glob("newsletter.db*.lock"))


def test_the_signal_handler_takes_no_lock_the_code_it_interrupts_may_hold():
    """A handler runs between two bytecodes of the main thread, maybe inside a lock it holds (as in
    `Event.set`): it must set a flag and return, not wait for that lock."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    with stop_on_signals(quiet=True) as stop:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        locks = [v for v in vars(stop).values() if hasattr(v, "acquire")]  # (a threading.Event's own lock too)
        for lock in locks:
            lock.acquire()
        try:
            in_thread(lambda: handler(signal.SIGTERM, None), 2)
            in_thread(lambda: handler(signal.SIGTERM, None), 2)
        finally:
            for lock in locks:
                lock.release()
        assert stop()


@pytest.fixture
def sg(tmp_path, monkeypatch, sendgrid_server):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    path = write_config(tmp_path, api_base=sendgrid_server.url, batch_size=10)
    path.write_text(path.read_text().replace("max_retries = 3", "max_retries = 3\nretry_backoff = 0.01"))
    ready_sample(tmp_path)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--config", str(path), *map(str, args)], catch_exceptions=False)

    run("subscribers", "import", str(people(tmp_path, 30, "g")), "--list", "weekly")
    return run


@pytest.mark.parametrize("garbage", [b"garbage\r\n\r\n", b"HTTP/1.1 202 " + b"x" * 70000 + b"\r\n\r\n"])
def test_a_garbled_answer_after_the_request_went_out_is_unknown_never_sent_again(sg, sendgrid_server, tmp_path,
                                                                                  garbage):
    sendgrid_server.garble_next(garbage)
    first = sg("send", tmp_path / "issues" / "2026-12-01.md", "--list", "weekly", "--yes")
    assert first.exit_code == 1, first.output
    assert "unknown" in first.output and "Traceback" not in first.output
    sg("send", tmp_path / "issues" / "2026-12-01.md", "--list", "weekly", "--yes")
    received = collections.Counter(sendgrid_server.received)
    assert len(received) == 30 and max(received.values()) == 1  # the garbled batch was not mailed again
    status = sg("status", "2026-12-01", "--list", "weekly", "--json")
    assert '"unknown": 10' in status.output


def test_a_408_is_retried_like_a_server_error(sg, sendgrid_server, tmp_path):
    sendgrid_server.answer_next(408)
    result = sg("send", tmp_path / "issues" / "2026-12-01.md", "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(collections.Counter(sendgrid_server.received).values()) == [1] * 30
