import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from newsletter import addresses, config as config_mod, consent, tokens
from newsletter.csvio import export_csv, import_csv, neutralise
from newsletter.errors import InputError, TokenError
from newsletter.schema import MIGRATIONS, upgrade
from newsletter.store import Store

from .conftest import write_config

DIRTY = (
    "\ufeffemail,name,city\r\n"
    "alice@example.com,Alice,Berlin\r\n"
    "ALICE@EXAMPLE.COM,Alice A.,\r\n"
    "  bob@example.org  ,Bob,Paris\r\n"
    "not-an-email,Nobody,\r\n"
    ",Empty,\r\n"
    '"carol@example.com","<b>Carol</b> & co",Rome\r\n'
    '"dave@example.com","=HYPERLINK(""http://evil.example"",""x"")",Oslo\r\n'
    '"erin@example.com","Erin\r\nBcc: x@y.z",Lima\r\n'
    "frank@bücher.de,Frank,Bonn\r\n"
    "jörg@example.com,Jörg,Wien\r\n"
    "bob@EXAMPLE.org,Bobby,\r\n"
)


@pytest.fixture
def store(cfg):
    with Store(cfg) as s:
        yield s


@pytest.fixture
def dirty(tmp_path):
    path = tmp_path / "dirty.csv"
    path.write_bytes(DIRTY.encode("utf-8"))
    return path


def dump(cfg) -> list:
    """Every row of every table, to compare a store before and after."""
    con = sqlite3.connect(cfg.store.url.removeprefix("sqlite:///"))
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
        return [(t, sorted(con.execute(f'select * from "{t}"').fetchall(), key=repr)) for t in tables]
    finally:
        con.close()


def test_dirty_csv_exact_counts_and_values(store, dirty):
    report = import_csv(store, dirty, "weekly")
    assert (report.read, report.added, report.updated, report.present, report.kept_out, report.rejected) == (
        11, 7, 0, 2, 0, 2)
    assert report.duplicates == 2
    assert store.get("alice@example.com").name == "Alice A."
    assert store.get("alice@example.com").attributes == {"city": "Berlin"}  # empty cell did not erase
    assert store.get("BOB@example.org").email == "bob@example.org"
    assert store.get("bob@example.org").name == "Bobby"
    assert store.get("carol@example.com").name == "<b>Carol</b> & co"
    assert store.get("erin@example.com").name == "Erin Bcc: x@y.z"
    assert store.get("frank@bücher.de").email == "frank@xn--bcher-kva.de"
    assert store.get("jörg@example.com").email == "jörg@example.com"
    rejects = list(csv.reader(report.rejects_path.open(encoding="utf-8")))
    assert [r[0] for r in rejects[1:]] == ["5", "6"]
    assert "no email address" in rejects[2][1]
    assert store.list_counts()["weekly"]["active"] == 7


def test_import_is_idempotent(store, dirty):
    import_csv(store, dirty, "weekly")
    again = import_csv(store, dirty, "weekly")
    assert (again.added, again.updated, again.kept_out) == (0, 0, 0)
    assert again.present == 9
    assert store.list_counts()["weekly"]["active"] == 7


def test_export_neutralises_formulas_and_round_trips(store, dirty, tmp_path, monkeypatch):
    import_csv(store, dirty, "weekly")
    first = io.StringIO()
    assert export_csv(store, "weekly", first) == 7
    text = first.getvalue()
    assert "'=HYPERLINK" in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["email"] for r in rows} >= {"frank@xn--bcher-kva.de", "jörg@example.com"}
    exported = tmp_path / "export.csv"
    exported.write_text(text, encoding="utf-8")
    other = tmp_path / "other"
    other.mkdir()
    with Store(config_mod.load(write_config(other))) as fresh:
        report = import_csv(fresh, exported, "weekly")
        assert (report.added, report.rejected) == (7, 0)
        assert fresh.get("dave@example.com").name == store.get("dave@example.com").name
        second = io.StringIO()
        export_csv(fresh, "weekly", second)

    def kept(export: str) -> list[dict[str, str]]:  # all but when and by what the rows arrived
        return [{k: v for k, v in r.items() if k not in ("subscribed_at", "status_changed_at", "source")}
                for r in csv.DictReader(io.StringIO(export))]

    assert kept(second.getvalue()) == kept(text)
    assert second.getvalue().splitlines()[0] == text.splitlines()[0]


@pytest.mark.parametrize("cell", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_neutralise(cell):
    assert neutralise(cell) == "'" + cell
    assert neutralise("plain") == "plain"


def test_leavers_are_not_reactivated_by_import(store, dirty):
    import_csv(store, dirty, "weekly")
    store.unsubscribe("bob@example.org", "weekly")
    store.suppress("carol@example.com", reason="asked by phone")
    store.change(store.get("dave@example.com").id, "weekly", consent.BOUNCE, "test")
    report = import_csv(store, dirty, "weekly")
    assert report.kept_out == 3
    assert store.get("bob@example.org").memberships["weekly"][0] == "unsubscribed"
    assert store.get("dave@example.com").memberships["weekly"][0] == "bounced"
    counts = store.list_counts()["weekly"]
    assert counts["active"] == 5 and counts["suppressed"] == 1
    # add is held to the same rule
    assert store.add("bob@example.org", "weekly")[1].startswith("kept out (they left the list on 20")


def test_unconfirmed_import_then_active_import_activates(store, dirty):
    import_csv(store, dirty, "weekly", status="unconfirmed")
    assert store.list_counts()["weekly"]["unconfirmed"] == 7
    report = import_csv(store, dirty, "weekly")
    assert report.updated == 7
    assert store.list_counts()["weekly"]["active"] == 7


def test_strict_leaves_store_untouched(store, cfg, dirty):
    store.add("zed@example.com", "weekly")
    before = dump(cfg)
    with pytest.raises(InputError, match=r"dirty.csv:5: .*--strict"):
        import_csv(store, dirty, "weekly", strict=True)
    assert dump(cfg) == before


def test_remove_erases_and_keeps_only_a_hash(store, cfg, dirty):
    import_csv(store, dirty, "weekly")
    store.remove("Alice@Example.com")
    assert store.find("alice@example.com") is None
    con = sqlite3.connect(cfg.store.url.removeprefix("sqlite:///"))
    rows = con.execute("select email_hash, email_key from suppressions").fetchall()
    con.close()
    assert rows == [(addresses.hash_key("alice@example.com"), None)]
    assert not any("alice" in repr(table) for table in dump(cfg))
    report = import_csv(store, dirty, "weekly")
    assert report.kept_out == 1 and store.find("alice@example.com") is None
    assert store.add("alice@example.com", "weekly")[1].startswith("kept out")
    assert store.find("alice@example.com") is None


def test_tokens_reject_tampering():
    signer = tokens.unsubscribe_signer(b"secret-one")
    token = signer.make(42, "weekly", "2026-12-01")
    assert signer.check(token) == tokens.Claims(42, "weekly", "2026-12-01")
    subscriber, context, sig = token.split(".")
    flip = lambda text: text[:-1] + ("A" if text[-1] != "A" else "B")  # noqa: E731
    for bad in (
        f"{subscriber}.{flip(context)}.{sig}",
        f"{subscriber}.{context}.{flip(sig)}",
        f"43.{context}.{sig}",  # another subscriber
        f"042.{context}.{sig}",
        tokens.unsubscribe_signer(b"secret-two").make(42, "weekly", "2026-12-01"),
        signer.make(42, "daily", "2026-12-01").rsplit(".", 1)[0] + "." + sig,  # another list
        "garbage", "", "a.b.c", "42.b.c.d",
    ):
        with pytest.raises(TokenError):
            signer.check(bad)
    # a confirmation token is not an unsubscribe token
    confirm = tokens.make_confirm(b"secret-one", 42, "weekly", ttl=60)
    with pytest.raises(TokenError):
        signer.check(confirm)
    assert tokens.check_confirm(b"secret-one", confirm).subscriber_id == 42
    with pytest.raises(TokenError, match="expired"):
        tokens.check_confirm(b"secret-one", confirm, now=time.time() + 61)


@pytest.mark.parametrize("secret", [b"secret-one", b"k" * 64, b"longer than one SHA-256 block" * 3, b"\xff" * 7])
def test_tokens_are_the_hmac_of_the_standard_library_so_links_already_sent_keep_working(secret):
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signer = tokens.unsubscribe_signer(secret)
    people = [(42, "Ada@Example.com"), (7, "bücher@bücher.de"), (1, "x@y.z")]
    made = signer.make_tagged(people, "weekly", "2026-12-01")
    for (sid, email), token in zip(people, made, strict=True):
        tag = b64(hashlib.sha256(email.lower().encode()).digest()[:6])
        subscriber = f"{sid}-{tag}"
        expected = hmac.new(secret, b"unsubscribe\x00" + f"{subscriber}|weekly|2026-12-01".encode(),
                            hashlib.sha256).digest()
        assert token == f"{subscriber}.{b64(b'weekly|2026-12-01')}.{b64(expected)}"
        assert token == signer.make(sid, "weekly", "2026-12-01", tokens.address_tag(email))
        assert signer.check(token) == tokens.Claims(sid, "weekly", "2026-12-01", tag)
    verp = tokens.ReturnPath("bounces@example.com", secret)
    assert verp.find(verp.make("2026-12-01", 42)) == (42, tokens.issue_digest("2026-12-01"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**12), st.text(min_size=1, max_size=40)), max_size=40),
       st.text(alphabet=st.characters(blacklist_characters="|"), max_size=12))
def test_a_batch_of_links_is_each_link_made_alone(people, extra):
    """`make_tagged` encodes a batch's tags and signatures together; each token must still be `make`'s."""
    signer = tokens.unsubscribe_signer(b"secret-one")
    assert signer.make_tagged(people, "weekly", extra) == [
        signer.make(sid, "weekly", extra, tokens.address_tag(email)) for sid, email in people]


_LOCAL = st.text(alphabet="abcXYZ019.!#$%&'*+/=?^_`{|}~-é", min_size=1, max_size=70)
_DOMAIN = st.sampled_from(["example.com", "EXAMPLE.org", "bücher.de", "localhost", "a..b", "x.test",
                           "sub.example.co.uk", "-bad.com", "ex_ample.com", "123.456", "xn--bcher-kva.de"])


@settings(max_examples=400, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN)
def test_fast_path_agrees_with_email_validator(local, domain):
    from email_validator import EmailNotValidError, validate_email

    text = f"{local}@{domain}"
    try:
        result = validate_email(text, check_deliverability=False)
        expected = f"{result.local_part}@{result.ascii_domain}"
    except EmailNotValidError:
        expected = None
    try:
        got = addresses.normalize(text).email
    except InputError:
        got = None
    assert got == expected


def run_cli(config_path, *args, **kwargs):
    env = {**os.environ, "NEWSLETTER_SECRET": "s"}
    return subprocess.run([sys.executable, "-m", "newsletter.cli", "--config", str(config_path), *args],
                          capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["subscribers", "import", "{dirty}", "--list", "montly"], "unknown list 'montly'"),
    (["subscribers", "import", "{missing}", "--list", "weekly"], "file not found"),
    (["subscribers", "import", "{noemail}", "--list", "weekly"],
     ":1: no email column (email, Email Address, …) in the header (mail, name)"),
    (["subscribers", "import", "{latin1}", "--list", "weekly"], ":3: not UTF-8 text"),
    (["subscribers", "add", "not an address", "--list", "weekly"], "invalid address"),
    (["subscribers", "show", "nobody@example.com"], "no subscriber with address"),
])
def test_bad_input_one_line_exit_2_store_unchanged(run, cfg, tmp_path, dirty, args, message):
    (tmp_path / "noemail.csv").write_text("mail,name\na@example.com,A\n")
    (tmp_path / "latin1.csv").write_bytes("email,name\na@example.com,A\nb@example.com,Jos\xe9\n".encode("latin-1"))
    paths = {"dirty": dirty, "missing": tmp_path / "missing.csv", "noemail": tmp_path / "noemail.csv",
             "latin1": tmp_path / "latin1.csv"}
    with Store(cfg) as s:
        s.add("kept@example.com", "weekly")
    before = dump(cfg)
    result = run(*[a.format(**paths) for a in args])
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.strip().count("\n") == 0
    assert dump(cfg) == before


def test_cli_subscriber_commands(run, dirty, tmp_path):
    result = run("subscribers", "import", dirty, "--list", "weekly")
    assert "rows read 11, added 7" in result.output and "dirty.csv:5: rejected" in result.output
    assert run("subscribers", "add", "new@example.com", "--list", "daily", "--name", "New",
               "--attr", "city=Kyiv").output.strip() == "new@example.com: added on daily"
    shown = run("subscribers", "show", "NEW@example.com").output
    assert "attr.city: Kyiv" in shown and "list daily: active" in shown
    assert "unsubscribed from weekly" in run("subscribers", "unsubscribe", "bob@example.org", "--list", "weekly").output
    assert "already unsubscribed" in run("subscribers", "unsubscribe", "bob@example.org", "--all").output
    assert run("subscribers", "suppress", "carol@example.com", "--reason", "complaint").output.strip() == "suppressed"
    assert "erased" in run("subscribers", "remove", "erin@example.com", "--yes").output
    again = run("subscribers", "add", "erin@example.com", "--list", "weekly")
    assert again.exit_code == 0 and "erin@example.com: kept out (the address is suppressed) on weekly" in again.output
    lists = run("subscribers", "lists").output
    assert "weekly" in lists and "daily" in lists
    out = tmp_path / "out.csv"
    run("subscribers", "export", "--list", "weekly", "--out", out)
    emails = [r["email"] for r in csv.DictReader(out.open())]
    assert "bob@example.org" not in emails and "erin@example.com" not in emails
    assert "carol@example.com" not in emails  # active means "would be mailed": a suppressed address is not
    run("subscribers", "export", "--list", "weekly", "--status", "all", "--out", out)
    statuses = {r["email"]: r["status"] for r in csv.DictReader(out.open())}
    assert statuses["carol@example.com"] == "suppressed" and statuses["bob@example.org"] == "unsubscribed"


def test_schema_is_versioned(cfg):
    with Store(cfg) as s:
        assert s.version == MIGRATIONS[-1][0]
        assert upgrade(s.engine) == s.version  # running again is a no-op


def test_killed_import_leaves_whole_chunks_and_rerun_completes(tmp_path, config_path, cfg):
    rows = 60_000
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("email,name\n")
        for i in range(rows):
            f.write(f"user{i}@example.com,User {i}\n")
    proc = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config_path), "subscribers",
                             "import", str(big), "--list", "weekly"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = cfg.store.url.removeprefix("sqlite:///")
    deadline = time.time() + 60
    count = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(db, timeout=5)
            count = con.execute("select count(*) from subscribers").fetchone()[0]
            con.close()
        except sqlite3.OperationalError:
            count = 0
        if count >= 10_000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    subs = con.execute("select count(*) from subscribers").fetchone()[0]
    members = con.execute("select count(*) from memberships").fetchone()[0]
    con.close()
    assert 0 < subs < rows, "the import was not killed midway"
    assert subs == members  # no subscriber without its membership: chunks are atomic
    assert subs % 5000 == 0
    result = run_cli(config_path, "subscribers", "import", str(big), "--list", "weekly", timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"added {rows - subs}," in result.stdout and f"already present {subs}" in result.stdout
    with Store(cfg) as s:
        assert s.list_counts()["weekly"]["active"] == rows


def test_inserting_a_row_whose_key_is_taken_says_so(store):
    insert_new_tells_a_taken_key(store)  # tests/test_postgres.py runs it on PostgreSQL


def insert_new_tells_a_taken_key(store: Store) -> None:
    """`insert_new` read the INSERT's rowcount, which SQLAlchemy does not keep for psycopg (-1): a taken
    key read as inserted, so a suppression was acted on twice and a welcome mail counted twice."""
    import datetime as dt

    import sqlalchemy as sa

    from newsletter.schema import events
    from newsletter.sql import insert_new

    row = {"event_key": "evt-1", "kind": "bounced", "email": "ada@example.com",
           "occurred_at": dt.datetime(2026, 12, 1), "received_at": dt.datetime(2026, 12, 1)}
    with store.write() as conn:
        assert insert_new(conn, events, row) is True
        assert insert_new(conn, events, {**row, "kind": "complained"}) is False
        assert conn.execute(sa.select(events.c.kind)).scalars().all() == ["bounced"]
