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
from newsletter.ledger import Ledger, sent_issues
from newsletter.store import Store

from .conftest import ROOT, SECRET, write_config
from .test_store import insert_new_tells_a_taken_key

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
        assert [s["recipients"] for s in sent_issues(store)] == [12]  # an INSERT's rowcount: -1 on psycopg
        assert store.find("ken@example.com") is None
    assert run("subscribers", "import", SAMPLE, "--list", "weekly").output.count("kept out 2") == 1


def test_inserting_a_row_whose_key_is_taken_says_so(pg_config):
    with Store(pg_config) as store:
        insert_new_tells_a_taken_key(store)


def test_an_incident_is_alerted_once_on_postgresql_too(pg_config):
    """With a taken key read as inserted, every cron run on PostgreSQL opened the same incident again
    and alerted the operator once per run."""
    from newsletter.alerts import Alert, open_incident, resolve

    failures = Alert("send-failures:2026-12-01:weekly", "3 failed", "3 recipients failed")
    with Store(pg_config) as store:
        assert [open_incident(store, failures) for _ in range(3)] == [True, False, False]
        assert resolve(store, failures.key) and open_incident(store, failures)  # over, then back: a new one


def _at_once(count: int, call) -> list[Exception]:
    """`call(i)` in `count` threads released together; the exceptions they raised."""
    import threading

    start, failures = threading.Barrier(count), []

    def run(i: int) -> None:
        start.wait()
        try:
            call(i)
        except Exception as exc:  # noqa: BLE001 - the test reports every one
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_programs_opening_a_new_database_at_once_create_its_schema_once(pg_config):
    """Two programs started together on an empty database (a scheduler and a cron send, say) each
    began creating the tables, and the second died of PostgreSQL's duplicate-key error."""
    engines = [sa.create_engine(pg_config.store.url) for _ in range(6)]
    assert _at_once(len(engines), lambda i: Store(pg_config, engines[i]).close()) == []
    with Store(pg_config) as store, store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 1


def test_programs_using_a_list_for_the_first_time_at_once_share_its_row(pg_config):
    """Two programs' first use of a list (an import while the web app takes a subscribe, say): both
    found no row, both inserted one, and the second failed on the unique name."""
    stores = [Store(pg_config) for _ in range(6)]
    ids: list[int] = []
    failures = _at_once(len(stores), lambda i: ids.append(stores[i].list_id("weekly")))
    for store in stores:
        store.close()
    assert failures == [] and len(ids) == len(stores) and len(set(ids)) == 1


def test_one_address_subscribing_several_times_at_once_is_stored_once(pg_config):
    """A form sent twice at once (a double click, a retrying proxy) or an add while the form is sent:
    both found no such person, both inserted one, and the second failed on the unique address."""
    stores = [Store(pg_config) for _ in range(6)]
    stores[0].list_id("weekly")

    def subscribe(i: int) -> None:
        if i % 2:
            stores[i].request_subscription("Ada@Example.com", "weekly", source="web")
        else:
            stores[i].add("ada@example.com", "weekly", source="cli")

    try:
        assert _at_once(len(stores), subscribe) == []
        with stores[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM subscribers")).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM memberships")).scalar() == 1
    finally:
        for store in stores:
            store.close()


def _while_uncommitted(store: Store, change, call) -> list:
    """`call()` in another thread while `change(conn)` is written in a transaction of `store` that commits
    only half a second later; what `call` returned, or nothing when it raised (its thread reports that)."""
    import threading
    import time

    returned: list = []
    with store.write() as conn:
        change(conn)
        other = threading.Thread(target=lambda: returned.append(call()))
        other.start()
        time.sleep(0.5)  # the call is under way: it waits for the change, or reads around it
    other.join()
    return returned


def test_a_confirmation_while_the_person_unsubscribes_does_not_bring_them_back(pg_config):
    """Each change of a membership decides from its current state: a confirmation that read the state
    before an unsubscribe committed must not then write `active` over it."""
    from newsletter import consent

    with Store(pg_config) as first, Store(pg_config) as second:
        subscriber_id, _mail = first.request_subscription("ada@example.com", "weekly")
        assert subscriber_id is not None

        def unsubscribe(conn: sa.Connection) -> None:
            first._change(conn, subscriber_id, first.list_id("weekly", conn), consent.UNSUBSCRIBE, "web")

        assert _while_uncommitted(first, unsubscribe, lambda: second.confirm(subscriber_id, "weekly")) == [
            "unsubscribed"]
        assert first.membership(subscriber_id, "weekly") == ("ada@example.com", "unsubscribed")


def test_an_import_while_another_program_stores_one_of_its_addresses_imports_every_row(pg_config, tmp_path):
    """The web app stored an address of the file while the import ran: the chunk's insert of that
    address failed on the unique key and the import ended in a traceback."""
    from newsletter.csvio import import_csv
    from newsletter.schema import subscribers

    rows = tmp_path / "rows.csv"
    rows.write_text("email\nada@example.com\ngrace@example.com\n")
    with Store(pg_config) as first, Store(pg_config) as second:
        second.list_id("weekly")

        def store_ada(conn: sa.Connection) -> None:  # another program's new person
            conn.execute(subscribers.insert().values(email="ada@example.com", email_key="ada@example.com", name="",
                                                     attributes="{}", created_at=sa.func.now(),
                                                     updated_at=sa.func.now()))

        assert len(_while_uncommitted(first, store_ada, lambda: import_csv(second, rows, "weekly"))) == 1, (
            "the import failed")
        assert second.get("ada@example.com").memberships["weekly"][0] == "active"
        assert second.get("grace@example.com").memberships["weekly"][0] == "active"


def test_an_import_while_a_member_unsubscribes_does_not_bring_them_back(pg_config, tmp_path):
    """The import read an unconfirmed membership, the person unsubscribed, and the import then wrote
    `active` (what importing an unconfirmed member as active does) over the unsubscribe."""
    from newsletter import consent
    from newsletter.csvio import import_csv

    rows = tmp_path / "rows.csv"
    rows.write_text("email\nada@example.com\ngrace@example.com\n")
    with Store(pg_config) as first, Store(pg_config) as second:
        subscriber_id, _mail = first.request_subscription("ada@example.com", "weekly")
        assert subscriber_id is not None

        def unsubscribe(conn: sa.Connection) -> None:
            first._change(conn, subscriber_id, first.list_id("weekly", conn), consent.UNSUBSCRIBE, "web")

        assert len(_while_uncommitted(first, unsubscribe, lambda: import_csv(second, rows, "weekly"))) == 1, (
            "the import failed")
        assert first.membership(subscriber_id, "weekly") == ("ada@example.com", "unsubscribed")
        assert second.get("grace@example.com").memberships["weekly"][0] == "active"


def test_one_event_delivered_twice_at_once_is_stored_and_acted_on_once(pg_config):
    """A provider retries a webhook call that is still being answered (or two `serve` processes get
    the same event): both found the event new, and the second failed on its unique key."""
    import datetime as dt

    from newsletter import events
    from newsletter.webhooks.base import TrackingEvent

    bounce = TrackingEvent(kind="bounced", email="ada@example.com", timestamp=dt.datetime(2026, 12, 1, 9),
                           event_id="evt-1", reason="550 no such user")
    with Store(pg_config) as first, Store(pg_config) as second:
        first.add("ada@example.com", "weekly")

        def receive(conn: sa.Connection) -> None:
            assert events.apply(first, [bounce], "sendgrid webhook", conn)["bounced"] == 1

        retried = _while_uncommitted(first, receive, lambda: events.apply(second, [bounce], "sendgrid webhook"))
        assert retried == [{"duplicate": 1}], "the retry failed"
        ada = second.get("ada@example.com")
        assert ada.suppressed and ada.memberships["weekly"][0] == "bounced"


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
