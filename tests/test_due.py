"""The one due rule: what cron, the scheduler, `send --due --dry-run` and `schedule list` all act on.

An issue goes automatically only at the first slot on or after its date (any slot of that day),
or later within the misfire grace; past that it is MISSED and only a send by hand sends it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.ledger import sent_issues

from .conftest import ROOT, SECRET, write_config
from .fake_provider import FakeProvider

UTC = dt.UTC
SAMPLE = ROOT / "subscribers" / "sample.csv"
MONDAY_0900 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def issue(folder: Path, slug: str, date: str, *, draft: bool = False) -> Path:
    path = folder / "issues" / f"{slug}.md"
    path.write_text(f"---\nsubject: Issue {slug}\ndate: {date}\n" + ("draft: true\n" if draft else "")
                    + "---\n\nHello %%name%%.\n")
    return path


def newsletter(tmp_path: Path, monkeypatch, cron: str = "0 9 * * MON", grace: int = 21600):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, extra=f'\n[schedule]\ncron = "{cron}"\ntimezone = "UTC"\nlist = "weekly"\n'
                                        f"misfire_grace = {grace}\n")
    fake = FakeProvider(max_batch=100)
    nl = Newsletter(config_mod.load(path), provider_factory=fake.factory)
    nl.subscribers.import_csv(SAMPLE, "weekly")
    return nl, fake


def sends(nl: Newsletter) -> list[str]:
    return [row["issue"] for row in sent_issues(nl.store)]


@pytest.fixture
def weekly(tmp_path, monkeypatch):
    nl, fake = newsletter(tmp_path, monkeypatch)
    yield nl, fake
    nl.close()


def due_slugs(nl: Newsletter, now: dt.datetime) -> list[str]:
    return [item.slug for item in nl.schedule.plan("weekly", now=now).due]


def test_an_issue_dated_the_slots_monday_goes_at_that_slot_and_one_dated_wednesday_the_next(weekly, tmp_path):
    nl, _fake = weekly
    issue(tmp_path, "monday", "2026-11-30")
    issue(tmp_path, "wednesday", "2026-12-02")
    assert due_slugs(nl, MONDAY_0900 - dt.timedelta(minutes=1)) == []
    assert due_slugs(nl, MONDAY_0900) == ["monday"]
    assert due_slugs(nl, MONDAY_0900 + dt.timedelta(hours=5)) == ["monday"]  # within the 6 h grace
    plan = nl.schedule.plan("weekly", now=MONDAY_0900 + dt.timedelta(days=2, hours=3))  # Wednesday noon
    assert plan.due == [] and plan.next_slot == MONDAY_0900 + dt.timedelta(days=7)
    assert plan.next_issue is not None and plan.next_issue.name == "wednesday.md"
    assert due_slugs(nl, MONDAY_0900 + dt.timedelta(days=7)) == ["wednesday"]


def test_back_issues_dropped_in_today_are_never_sent_by_cron_and_every_view_says_so(tmp_path, monkeypatch):
    nl, _fake = newsletter(tmp_path, monkeypatch)
    for n in (1, 2, 3):
        issue(tmp_path, f"2019-0{n}-07", f"2019-0{n}-07")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--config", str(nl.config.path), *args], catch_exceptions=False)

    for _ in range(3):  # cron, three minutes in a row
        result = run("send", "--due")
        assert result.exit_code == 0 and result.output == ""
    assert sends(nl) == []
    listing = run("schedule", "list").output
    dry = run("send", "--due", "--dry-run").output
    for text in (listing, dry):
        for n in (1, 2, 3):
            line = next(line for line in text.splitlines() if f"2019-0{n}-07.md" in line)
            assert "never sent automatically" in line
            assert f"newsletter send {tmp_path / 'issues' / f'2019-0{n}-07.md'} --list weekly" in line
    assert "2019" not in next(line for line in listing.splitlines() if line.startswith("weekly:weekly"))
    nl.close()


def test_with_an_every_minute_schedule_an_issue_dated_today_goes_at_the_next_run(tmp_path, monkeypatch):
    nl, fake = newsletter(tmp_path, monkeypatch, cron="* * * * *")
    issue(tmp_path, "today", "2026-12-01")
    issue(tmp_path, "yesterday", "2026-11-30")
    at = dt.datetime(2026, 12, 1, 14, 37, 12, tzinfo=UTC)
    run = nl.schedule.due("weekly", now=at)
    assert run.report is not None and run.report.issue == "today" and len(fake.sent) == 12
    assert run.exit_code == 1 and f"MISSED: {tmp_path / 'issues' / 'yesterday.md'} " in run.line
    assert sends(nl) == ["today"]  # yesterday's issue missed its day
    nl.close()


def test_after_three_days_off_the_missed_slot_is_reported_not_sent_late(weekly, tmp_path):
    nl, fake = weekly
    path = issue(tmp_path, "monday", "2026-11-30")
    run = nl.schedule.due("weekly", now=MONDAY_0900 + dt.timedelta(days=3))
    assert run.exit_code == 1 and run.report is None and fake.sent == []
    assert run.line.startswith(f"MISSED: {path} ")
    assert f"newsletter send {path} --list weekly" in run.line
    plan = nl.schedule.plan("weekly", now=MONDAY_0900 + dt.timedelta(days=3))
    assert [m.path for m in plan.missed] == [path]


def test_at_most_one_weekly_issue_per_list_per_slot(weekly, tmp_path):
    nl, fake = weekly
    issue(tmp_path, "a-first", "2026-11-27")
    issue(tmp_path, "b-second", "2026-11-28")
    first = nl.schedule.due("weekly", now=MONDAY_0900)
    assert first.report is not None and first.report.issue == "a-first"
    again = nl.schedule.due("weekly", now=MONDAY_0900 + dt.timedelta(minutes=1))  # cron's next minute
    assert again.report is None and len(fake.sent) == 12
    plan = nl.schedule.plan("weekly", now=MONDAY_0900 + dt.timedelta(minutes=1))
    assert plan.due == []
    (waiting,) = [s for s in plan.skipped if s.slug == "b-second"]
    assert "a-first went at this slot" in waiting.why


def test_a_pin_sends_at_its_time_whatever_the_issues_date(weekly, tmp_path):
    nl, fake = weekly
    old = issue(tmp_path, "2019-03-04", "2019-03-04")
    at = dt.datetime.now(UTC) + dt.timedelta(minutes=5)
    nl.schedule.pin(old, f"{at:%Y-%m-%d %H:%M}", "weekly")
    run = nl.schedule.due("weekly", now=at + dt.timedelta(minutes=1))
    assert run.report is not None and run.report.issue == "2019-03-04" and len(fake.sent) == 12


def test_an_interrupted_send_is_continued_within_its_window_and_reported_after(weekly, tmp_path):
    nl, fake = weekly
    path = issue(tmp_path, "monday", "2026-11-30")
    first = nl.sends.send(path, "weekly", limit=5)
    assert first.counts["pending"] == 7
    continued = nl.schedule.due("weekly", now=MONDAY_0900 + dt.timedelta(hours=1))
    assert continued.report is not None and continued.report.counts["sent"] == 12
    second = issue(tmp_path, "next", "2026-12-07")
    nl.sends.send(second, "weekly", limit=5)
    late = nl.schedule.due("weekly", now=MONDAY_0900 + dt.timedelta(days=7, hours=7))
    assert late.exit_code == 1 and late.report is None and len(fake.sent) == 17
    assert f"MISSED: {second} " in late.line and "7 pending" in late.line


def test_drafts_and_broken_files_are_listed_with_why(weekly, tmp_path):
    nl, _fake = weekly
    issue(tmp_path, "draft", "2026-11-30", draft=True)
    (tmp_path / "issues" / "broken.md").write_text("no front matter\n")
    plan = nl.schedule.plan("weekly", now=MONDAY_0900)
    reasons = {s.path.name: s.why for s in plan.skipped}
    assert plan.due == [] and "draft (draft: true)" in reasons["draft.md"]
    assert "front matter" in reasons["broken.md"]


def test_an_issue_due_with_an_error_in_its_body_fails_its_send_loudly_and_the_dry_run_lists_it(weekly, tmp_path):
    from newsletter.errors import ContentError

    nl, fake = weekly
    path = issue(tmp_path, "typo", "2026-11-30")
    path.write_text(path.read_text().replace("%%name%%", "%%nmae%%"))
    plan = nl.schedule.plan("weekly", now=MONDAY_0900)  # what `schedule list` and `--dry-run` show
    assert plan.due == [] and "unknown placeholder %%nmae%%" in {s.path.name: s.why for s in plan.skipped}["typo.md"]
    with pytest.raises(ContentError, match=r"typo\.md:\d+: unknown placeholder %%nmae%%"):
        nl.schedule.due("weekly", now=MONDAY_0900)  # cron: not left out in silence
    assert fake.sent == []


def test_the_scheduler_and_cron_act_on_the_same_plan(weekly, tmp_path):
    nl, fake = weekly
    issue(tmp_path, "2019-01-07", "2019-01-07")
    line = nl.schedule.due("weekly", now=MONDAY_0900).line  # what the scheduler's weekly job runs
    assert line == "" and fake.sent == []


def test_init_writes_its_sample_issue_as_a_draft_and_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "letter")])
    assert result.exit_code == 0, result.output
    from newsletter.content import parse

    assert parse(tmp_path / "letter" / "issues" / "2026-12-01.md", base_url="https://x.example").draft is True
    assert "draft: true" in result.output and "remove" in result.output


def test_cron_finding_nothing_due_starts_without_the_send_side_modules(tmp_path, monkeypatch):
    """What `send --due` imports when nothing is due, in a fresh interpreter: cron runs it every minute, so
    the providers, link signing, templates, address checks and the scheduler proper wait until used."""
    nl, _fake = newsletter(tmp_path, monkeypatch)
    nl.close()
    issue(tmp_path, "2019-01-07", "2019-01-07")  # listed by the rule, never sent
    script = ("import sys\nfrom newsletter.cli import main\nsys.argv = ['newsletter', 'send', '--due']\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(code, ' '.join(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NEWSLETTER_CONFIG": str(tmp_path / "config.toml")})
    code, _, modules = done.stdout.strip().splitlines()[-1].partition(" ")
    assert (code, done.stderr) == ("0", ""), done.stdout[:300] + done.stderr  # and silent: cron mails any output
    loaded = set(modules.split())
    for heavy in ("newsletter.providers", "newsletter.tokens", "newsletter.send", "webbrowser", "jinja2",
                  "email_validator", "markdown_it", "rich", "apscheduler.schedulers", "apscheduler.jobstores"):
        assert heavy not in loaded, f"{heavy} is imported by cron's nothing-due run"
