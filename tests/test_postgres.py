"""The store, ledger and send path on PostgreSQL, when a server is available.

Set NEWSLETTER_TEST_POSTGRES to a server URL without a database name, for example
postgresql+psycopg://postgres@/?host=/tmp&port=55432 (`.ci/run` starts one when it can).
"""

import os
import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import config as config_mod
from newsletter.cli import cli
from newsletter.ledger import Ledger
from newsletter.store import Store

from .conftest import ROOT, SECRET, write_config

SERVER = os.environ.get("NEWSLETTER_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(
    not SERVER, reason="NEWSLETTER_TEST_POSTGRES is not set: no PostgreSQL server to test on")
SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def pg_config(tmp_path, monkeypatch, sendgrid_server):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER.replace("/?", "/postgres?"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    path = write_config(tmp_path, api_base=sendgrid_server.url)
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"',
                                             f'url = "{SERVER.replace("/?", f"/{name}?")}"'))
    yield config_mod.load(path)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_import_send_and_lock_on_postgresql(pg_config, sendgrid_server):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--config", str(pg_config.path), *map(str, args)])

    issue = ROOT / "issues" / "2026-12-01.md"
    assert "added 12" in run("subscribers", "import", SAMPLE, "--list", "weekly").output
    assert "added 0" in run("subscribers", "import", SAMPLE, "--list", "weekly").output
    assert "recipients:   12" in run("send", issue, "--list", "weekly", "--dry-run").output
    first = run("send", issue, "--list", "weekly", "--yes", "--limit", "5")
    assert first.exit_code == 3, first.output  # stopped at --limit with rows pending
    run("subscribers", "unsubscribe", "radia@example.org", "--list", "weekly")
    run("subscribers", "remove", "ken@example.com", "--yes")
    rest = run("send", issue, "--list", "weekly", "--yes")
    assert rest.exit_code == 0, rest.output
    received = sendgrid_server.received
    assert len(received) == len(set(received)) == 10
    assert not {"radia@example.org", "ken@example.com"} & set(received)
    with Store(pg_config) as store:
        counts = Ledger(store, "2026-12-01", "weekly").counts()
        assert (counts["sent"], counts["skipped"], counts["pending"]) == (10, 2, 0)
        assert store.find("ken@example.com") is None
    assert run("subscribers", "import", SAMPLE, "--list", "weekly").output.count("kept out 2") == 1


def test_programs_opening_a_new_database_at_once_create_its_schema_once(pg_config):
    """Two programs started together on an empty database (a scheduler and a cron send, say) each
    began creating the tables, and the second died of PostgreSQL's duplicate-key error."""
    import threading

    engines = [sa.create_engine(pg_config.store.url) for _ in range(6)]
    start, failures = threading.Barrier(len(engines)), []

    def open_store(engine: sa.Engine) -> None:
        start.wait()
        try:
            Store(pg_config, engine).close()
        except Exception as exc:  # noqa: BLE001 - the test reports every one
            failures.append(exc)

    threads = [threading.Thread(target=open_store, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with Store(pg_config) as store, store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 1


def test_the_scheduler_lock_survives_an_idle_session_timeout_and_refuses_a_second_scheduler(pg_config):
    import signal
    import subprocess
    import sys
    import time

    database = sa.engine.make_url(pg_config.store.url).database
    admin = sa.create_engine(SERVER.replace("/?", "/postgres?"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a server (or a proxy) that closes sessions idle for a second
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '1s'"))
    admin.dispose()

    def scheduler() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(pg_config.path), "scheduler",
                                 "--list", "weekly"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NEWSLETTER_SECRET": SECRET})

    first = scheduler()
    try:
        assert first.stderr is not None
        started = ""  # holding the lock: a slow start must not let the second scheduler take it first
        while "scheduler started" not in started and first.poll() is None:
            started += first.stderr.readline()
        time.sleep(4)  # idle well past the timeout
        assert first.poll() is None, started + first.communicate()[1]
        second = scheduler()
        out, err = second.communicate(timeout=60)
        assert second.returncode != 0 and "another `newsletter scheduler` is running" in err, out + err
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, started + err
    assert "Traceback" not in err



def test_no_statement_is_prepared_on_the_server_so_each_is_planned_for_the_tables_as_they_are(pg_config):
    """psycopg 3 prepares a statement that runs five times on a connection; PostgreSQL may then keep one
    generic plan for it. An import's address lookups, prepared while `subscribers` was nearly empty,
    then compared every row with every address of the block: 200,000 rows spent most of a minute in
    those lookups alone. Nothing is prepared, so every lookup is planned for the table as it is."""
    store = Store(pg_config)
    try:
        with store.engine.connect() as conn:
            for _ in range(12):
                conn.execute(sa.select(sa.func.count()).select_from(sa.table("subscribers"))
                             .where(sa.column("email_key") == sa.bindparam("key")), {"key": "x@example.com"})
            prepared = conn.execute(sa.text("SELECT name, statement FROM pg_prepared_statements")).all()
    finally:
        store.close()
    assert prepared == []


def test_an_import_leaves_the_planners_statistics_current(pg_config, tmp_path):
    """Planned from the statistics of near-empty tables, a send's snapshot right after a large import
    scanned whole tables for every row (50,000 rows: minutes); autovacuum measures only in its own time."""
    rows = tmp_path / "rows.csv"
    rows.write_text("email\n" + "".join(f"reader{i}@example.com\n" for i in range(12_000)))
    result = CliRunner().invoke(cli, ["--config", str(pg_config.path), "subscribers", "import", str(rows),
                                      "--list", "weekly"])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(pg_config.store.url)
    with engine.connect() as conn:
        measured = dict(conn.execute(sa.text("SELECT relname, reltuples FROM pg_class "
                                             "WHERE relname IN ('subscribers', 'memberships', 'history')")).all())
    engine.dispose()
    assert measured == {"subscribers": 12_000, "memberships": 12_000, "history": 12_000}
