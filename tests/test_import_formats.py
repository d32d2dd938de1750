"""Moving a whole store in and out: exports that say who may be mailed, imports from other tools."""

from __future__ import annotations

import csv
import io

import pytest

from newsletter import Newsletter, consent
from newsletter.errors import InputError

from .conftest import ROOT, SECRET, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def make(tmp_path, monkeypatch, store_url):
    """A newsletter on a fresh store (SQLite, and PostgreSQL when available) in its own folder."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    opened = []

    def newsletter(name: str, url: str | None = None) -> Newsletter:
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder)
        path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{url or store_url}"'))
        opened.append(Newsletter.from_config(path))
        return opened[-1]

    yield newsletter
    for nl in opened:
        nl.close()


def statuses(nl: Newsletter) -> dict[str, str]:
    out = io.StringIO()
    nl.subscribers.export_csv("weekly", out, None)
    return {r["email"]: r["status"] for r in csv.DictReader(io.StringIO(out.getvalue()))}


def test_an_export_restores_a_whole_store_statuses_and_suppressions_included(make, tmp_path):
    source = make("source")
    source.subscribers.import_csv(SAMPLE, "weekly")
    source.subscribers.unsubscribe("ada@example.com", "weekly")
    source.store.change(source.subscribers.get("grace@example.org").id, "weekly", consent.BOUNCE, "test")
    source.subscribers.suppress("alan@example.com", "complained by phone")
    source.subscribers.erase("ken@example.com")
    exported = tmp_path / "export.csv"
    source.subscribers.export_csv("weekly", exported, None)
    before = statuses(source)
    assert before["ada@example.com"] == "unsubscribed" and before["alan@example.com"] == "suppressed"
    assert "ken@example.com" not in before
    # "active" means: would be mailed.
    active = io.StringIO()
    source.subscribers.export_csv("weekly", active)
    assert {r["status"] for r in csv.DictReader(io.StringIO(active.getvalue()))} == {"active"}
    suppressions = io.StringIO()
    assert source.subscribers.export_suppressions(suppressions) == 2  # alan, and the erased ken as a hash only
    rows = list(csv.DictReader(io.StringIO(suppressions.getvalue())))
    assert {r["email"] for r in rows} == {"alan@example.com", ""}
    assert all(len(r["email_sha256"]) == 64 for r in rows)

    target = make("target", "sqlite:///copy.db")
    report = target.subscribers.import_csv(exported, "weekly")
    assert report.rejected == 0 and report.suppressed == 1
    after = statuses(target)
    def unsuppressed(found: dict[str, str]) -> dict[str, str]:
        return {e: s for e, s in found.items() if s != "suppressed"}

    assert unsuppressed(after) == unsuppressed(before)
    assert target.subscribers.record("grace@example.org")["lists"]["weekly"]["status"] == "bounced"
    assert target.subscribers.add("alan@example.com", "weekly")[1].startswith("kept out (the address is suppressed)")
    # An unsubscribed row stays so on a second import, and nobody becomes active who was not.
    target.subscribers.import_csv(exported, "weekly")
    assert statuses(target)["ada@example.com"] == "unsubscribed"


def test_an_unclosed_quote_is_reported_where_it_starts_the_rest_imported_and_strict_imports_nothing(
        make, tmp_path, run):
    nl = make("quotes")
    lines = ["email,name", "ok@example.com,Fine", 'broken@example.com,"Never closed', *(
        f"r{i}@example.com,Reader {i}" for i in range(2000))]
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n")
    report = nl.subscribers.import_csv(path, "weekly")
    assert report.rejected == 1 and report.added == 2001  # every row but the broken one
    line, reason = report.reject_samples[0]
    assert line == 3 and "probably a quote that is never closed" in reason
    with pytest.raises(InputError, match=r"quote\.csv:3: a field starting on this line .*nothing was imported"):
        nl.subscribers.import_csv(path, "daily", strict=True)
    assert nl.subscribers.counts()["daily"]["active"] == 0


def test_listmonk_and_mailchimp_exports_import_as_they_mean(make, tmp_path):
    nl = make("tools")
    listmonk = tmp_path / "listmonk.csv"
    listmonk.write_text(
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        '5e1b,ann@example.com,Ann,"{""city"": ""Oslo""}",enabled,2024-01-01,2024-01-02\n'
        "6f2c,bad@example.com,Bad,{},blocklisted,2024-01-01,2024-01-02\n")
    report = nl.subscribers.import_csv(listmonk, "weekly")
    assert (report.added, report.suppressed, report.rejected) == (1, 1, 0)
    ann = nl.subscribers.get("ann@example.com")
    assert ann.memberships["weekly"][0] == "active" and ann.attributes == {"city": "Oslo"}  # no uuid, no dates
    assert nl.subscribers.add("bad@example.com", "weekly")[1].startswith("kept out")
    mailchimp = tmp_path / "mailchimp.csv"
    mailchimp.write_text("Email Address;First Name;Last Name;Status\n"
                         "mc@example.com;Mary;Curie;subscribed\n"
                         "gone@example.com;Old;Reader;unsubscribed\n"
                         "dead@example.com;No;Mailbox;cleaned\n", encoding="utf-8")
    report = nl.subscribers.import_csv(mailchimp, "daily")  # semicolons, as a European spreadsheet saves it
    assert (report.added, report.suppressed, report.rejected) == (2, 1, 0)
    assert nl.subscribers.get("mc@example.com").name == "Mary Curie"
    assert nl.subscribers.get("gone@example.com").memberships["daily"][0] == "unsubscribed"
    assert statuses(nl) == {"ann@example.com": "active"}  # a blocklisted address that was never stored stays so
    custom = tmp_path / "custom.csv"
    custom.write_text("Mail\tWho\nx@example.com\tX\n")
    assert nl.subscribers.import_csv(custom, "weekly", email_column="Mail").added == 1


def test_values_a_column_cannot_hold_are_rejected_with_a_reason(make, tmp_path):
    nl = make("limits")
    path = tmp_path / "long.csv"
    path.write_text(f"email,name,note\nlong@example.com,{'N' * 301},x\nnul@example.com,A\x00B,x\n"
                    f"fine@example.com,Fine,{'n' * 100}\n")
    report = nl.subscribers.import_csv(path, "weekly")
    assert (report.added, report.rejected) == (1, 2)
    reasons = dict(report.reject_samples)
    assert "the name is 301 characters; at most 300" in reasons[2] and "NUL" in reasons[3]


def test_export_neutralises_formulas_in_attribute_names_too(make, tmp_path):
    nl = make("formulas")
    path = tmp_path / "formula.csv"
    path.write_text('email,=HYPERLINK("http://x"),+1\nf@example.com,a,b\n')
    nl.subscribers.import_csv(path, "weekly")
    out = io.StringIO()
    nl.subscribers.export_csv("weekly", out)
    header = next(csv.reader(io.StringIO(out.getvalue())))
    assert "'=HYPERLINK(\"http://x\")" in header and "'+1" in header
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in header)
