"""Several sending processes share one send through the ledger, on SQLite and on PostgreSQL."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter import Newsletter

from .conftest import ROOT, SECRET, wait_for, write_config
from .test_metrics import file_samples, value

ISSUE = ROOT / "issues" / "2026-12-01.md"


def people(folder: Path, n: int) -> Path:
    path = folder / "people.csv"
    path.write_text("email\n" + "".join(f"w{i}@example.com\n" for i in range(n)))
    return path


@pytest.fixture
def shared(tmp_path, monkeypatch, sendgrid_server, store_url):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    path = write_config(tmp_path, api_base=sendgrid_server.url, batch_size=50,
                        extra="\n[send]\nconcurrency = 2\nlease = 3\n")
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    return path


def worker(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config), "send", str(ISSUE),
                             "--list", "weekly", "--yes", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holders(nl: Newsletter) -> int:
    """How many workers hold rows in flight now."""
    with nl.store.engine.connect() as conn:
        query = "SELECT count(DISTINCT worker_id) FROM deliveries WHERE state = 'in_flight'"
        return conn.exec_driver_sql(query).scalar()


@pytest.mark.slow
def test_three_workers_share_a_send_and_survive_one_being_killed(shared, sendgrid_server, tmp_path):
    n = 2000
    with Newsletter.from_config(shared) as nl:
        nl.subscribers.import_csv(people(tmp_path, n), "weekly")
    sendgrid_server.latency = 0.15
    workers = [worker(shared) for _ in range(3)]
    assert wait_for(lambda: len(sendgrid_server.received) >= 400, 60)
    workers[0].send_signal(signal.SIGKILL)
    outputs = [w.communicate(timeout=120) for w in workers[1:]]
    workers[0].wait(10)
    for w, (out, err) in zip(workers[1:], outputs, strict=True):
        assert w.returncode in (0, 1), out + err  # 1: rows of the killed worker are reported unknown
        assert "Traceback" not in err
    with Newsletter.from_config(shared) as nl:
        counts = nl.sends.status(ISSUE, "weekly").counts
        with nl.store.engine.connect() as conn:
            unknown = {r[0] for r in conn.exec_driver_sql(
                "SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE d.state = 'unknown'")}
            busy = conn.exec_driver_sql("SELECT count(*) FROM workers WHERE sent > 0").scalar()
    received = collections.Counter(sendgrid_server.received)
    everyone = {f"w{i}@example.com" for i in range(n)}
    assert max(received.values()) == 1  # nobody twice
    assert set(received) | unknown == everyone  # nobody skipped: each received, or reported unknown
    assert counts["sent"] + counts["unknown"] == n and counts["pending"] == counts["in_flight"] == 0
    assert busy >= 2  # the work really was shared
    # Re-sending the unknown rows completes the list; only those can arrive twice.
    last = worker(shared, "--resend-unknown")
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, out + err
    received = collections.Counter(sendgrid_server.received)
    assert set(received) == everyone
    assert {address for address, times in received.items() if times > 1} <= unknown


@pytest.mark.slow
def test_a_second_send_joins_the_first_instead_of_failing(shared, sendgrid_server, tmp_path):
    with Newsletter.from_config(shared) as nl:
        nl.subscribers.import_csv(people(tmp_path, 1200), "weekly")
    shared.write_text(shared.read_text().replace("timeout = 2\n", "timeout = 120\n", 1))  # answers are held
    sendgrid_server.latency = 0.3
    first = worker(shared)
    assert wait_for(lambda: len(sendgrid_server.received) >= 50, 60)
    # The first worker's answers wait until the second holds a batch too, however slowly it starts.
    sendgrid_server.gate.clear()
    second = worker(shared)
    try:
        with Newsletter.from_config(shared) as nl:
            assert wait_for(lambda: holders(nl) >= 2, 60)
    finally:
        sendgrid_server.gate.set()
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], results
    assert "nothing to send" not in results[1][0] and "this run sent 0," not in results[1][0]  # it took a share
    assert sorted(sendgrid_server.received) == sorted(f"w{i}@example.com" for i in range(1200))


def test_one_issue_to_two_overlapping_lists_at_once_reaches_each_person_once(store_url, tmp_path, monkeypatch):
    import threading

    from .fake_provider import FakeProvider

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    everyone = people(tmp_path, 300)
    with Newsletter.from_config(path) as nl:
        nl.subscribers.import_csv(everyone, "weekly")
        nl.subscribers.import_csv(everyone, "daily")
        nl.subscribers.add("only-daily@example.com", "daily")
    for round_ in range(5):  # it used to fail every time on PostgreSQL
        issue = tmp_path / f"issue-{round_}.md"
        issue.write_text(ISSUE.read_text().replace("slug: 2026-12-01", f"slug: round-{round_}"))
        fakes = [FakeProvider(max_batch=50, max_in_flight=2) for _ in range(2)]
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def send(list_name: str, fake: FakeProvider, issue: Path, start: threading.Barrier,
                 errors: list[BaseException]) -> None:
            with Newsletter.from_config(path, provider_factory=fake.factory) as nl:
                mailing = nl.sends.mailing(issue, list_name)
                start.wait()
                try:
                    nl.sends.send(mailing)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=send, args=(name, fake, issue, start, errors))
                   for name, fake in zip(("weekly", "daily"), fakes, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        received = collections.Counter(fakes[0].sent + fakes[1].sent)
        assert len(received) == 301 and set(received.values()) == {1}


def test_send_workers_starts_the_other_processes_and_reports_the_whole_send(shared, sendgrid_server, tmp_path,
                                                                            pushgateway):
    from click.testing import CliRunner

    from newsletter.cli import cli

    n = 2000  # 40 batches, 6 s for one process: the others start well before the work runs out
    with Newsletter.from_config(shared) as nl:
        nl.subscribers.import_csv(people(tmp_path, n), "weekly")
    shared.write_text(shared.read_text() + f'\n[metrics]\npushgateway = "{pushgateway.url}"\n')
    sendgrid_server.latency = 0.3
    figures = tmp_path / "textfile" / "newsletter.prom"
    result = CliRunner().invoke(cli, ["--config", str(shared), "send", str(ISSUE), "--list", "weekly", "--yes",
                                      "--workers", "3", "--metrics-file", str(figures)])
    assert result.exit_code == 0, result.output
    assert "in total: sent 2,000" in result.output and "3 worker processes shared the send" in result.output
    received = collections.Counter(sendgrid_server.received)
    assert len(received) == n and max(received.values()) == 1  # everyone, once
    with Newsletter.from_config(shared) as nl, nl.store.engine.connect() as conn:
        busy = conn.exec_driver_sql("SELECT count(*) FROM workers WHERE sent > 0").scalar()
    assert busy >= 2  # the work really was shared
    # The figures are the whole send's, every process's counts added up, in the file and the push alike.
    pushed = pushgateway.groups()[("newsletter", "send")]
    for found in (file_samples(figures), pushed):
        assert value(found, "newsletter_deliveries_total", list="weekly", provider="sendgrid", outcome="sent") == n
        assert value(found, "newsletter_provider_requests_total", provider="sendgrid", status="202") == n / 50
        assert value(found, "newsletter_provider_request_duration_seconds_count", provider="sendgrid") == n / 50
        assert value(found, "newsletter_send_runs_total", list="weekly", outcome="complete") == 3
    assert sorted(p.name for p in figures.parent.iterdir()) == ["newsletter.prom"]  # nothing of the others left


def test_a_signal_to_the_first_process_of_send_workers_stops_them_all(shared, sendgrid_server, tmp_path):
    n = 4000
    with Newsletter.from_config(shared) as nl:
        nl.subscribers.import_csv(people(tmp_path, n), "weekly")
    sendgrid_server.latency = 0.2
    first = worker(shared, "--workers", "2")
    assert wait_for(lambda: len(sendgrid_server.received) >= 300, 60)
    with Newsletter.from_config(shared) as nl:
        assert wait_for(lambda: len(nl.sends.status(ISSUE, "weekly").workers) == 2, 30)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, out + err
    with Newsletter.from_config(shared) as nl:
        status = nl.sends.status(ISSUE, "weekly")
    assert status.workers == []  # the other one stopped too
    assert status.counts["pending"] > 0 and status.counts["in_flight"] == status.counts["unknown"] == 0
    assert status.counts["sent"] == len(sendgrid_server.received) == len(set(sendgrid_server.received))


def test_workers_must_be_a_number_or_auto(shared):
    from click.testing import CliRunner

    from newsletter.cli import cli

    for bad in ("0", "two", "-1"):
        result = CliRunner().invoke(cli, ["--config", str(shared), "send", str(ISSUE), "--list", "weekly", "--yes",
                                          "--workers", bad])
        assert result.exit_code == 2 and "--workers" in result.output, result.output
    limited = CliRunner().invoke(cli, ["--config", str(shared), "send", str(ISSUE), "--list", "weekly", "--yes",
                                       "--workers", "2", "--limit", "5"])
    assert limited.exit_code == 2 and "not with --limit" in limited.output
