import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from newsletter import config as config_mod, content, schedule
from newsletter.errors import ConfigError, ContentError
from newsletter.ledger import Ledger
from newsletter.store import Store

from .conftest import ROOT, SECRET, ready_sample, write_config

UTC = dt.UTC
SAMPLE = ROOT / "subscribers" / "sample.csv"


def cfg_with(tmp_path: Path, cron: str = "0 9 * * MON", tz: str = "UTC", grace: int = 21600, **kw) -> config_mod.Config:
    path = write_config(tmp_path, extra=f'\n[schedule]\ncron = "{cron}"\ntimezone = "{tz}"\nlist = "weekly"\n'
                                        f"misfire_grace = {grace}\n", **kw)
    return config_mod.load(path)


@pytest.mark.parametrize("cron, expected", [
    ("0 9 * * 1", dt.datetime(2026, 11, 30, 9, tzinfo=UTC)),  # Monday, as in cron
    ("0 9 * * MON", dt.datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("0 9 * * 0", dt.datetime(2026, 12, 6, 9, tzinfo=UTC)),  # Sunday
    ("0 9 * * 7", dt.datetime(2026, 12, 6, 9, tzinfo=UTC)),  # Sunday too
    ("30 6 * * 1-5", dt.datetime(2026, 11, 30, 6, 30, tzinfo=UTC)),
    ("0 9 * * 6", dt.datetime(2026, 12, 5, 9, tzinfo=UTC)),  # Saturday
])
def test_weekdays_are_numbered_as_in_cron(tmp_path, cron, expected):
    trigger = schedule.trigger(cfg_with(tmp_path, cron=cron))
    sunday_noon = dt.datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, sunday_noon) == expected


def test_apschedulers_own_crontab_would_get_monday_wrong():
    # The pitfall the translation exists for: APScheduler 3 reads "1" as Tuesday.
    raw = CronTrigger.from_crontab("0 9 * * 1", timezone="UTC")
    assert raw.get_next_fire_time(None, dt.datetime(2026, 11, 29, 12, tzinfo=UTC)).weekday() == 1


def test_berlin_weekly_schedule_across_both_dst_changes(tmp_path):
    trigger = schedule.trigger(cfg_with(tmp_path, cron="0 9 * * MON", tz="Europe/Berlin"))
    runs, at = [], dt.datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(53):
        at = trigger.get_next_fire_time(None, at + dt.timedelta(seconds=1))
        runs.append(at.astimezone(UTC))
    assert all(r.weekday() == 0 for r in runs)
    assert dt.datetime(2026, 3, 23, 8, tzinfo=UTC) in runs  # CET: 09:00 is 08:00 UTC
    assert dt.datetime(2026, 3, 30, 7, tzinfo=UTC) in runs  # CEST from March 29: 07:00 UTC
    assert dt.datetime(2026, 10, 19, 7, tzinfo=UTC) in runs
    assert dt.datetime(2026, 10, 26, 8, tzinfo=UTC) in runs  # CET again from October 25
    assert {r.hour for r in runs} == {7, 8}


@pytest.mark.parametrize("cron, tz, message", [
    ("0 9 * *", "UTC", "must have 5 fields"),
    ("0 25 * * MON", "UTC", "[schedule] cron"),
    ("0 9 * * FUNDAY", "UTC", "bad weekday"),
    ("0 9 * * MON", "Europe/Atlantis", "unknown time zone 'Europe/Atlantis'"),
])
def test_invalid_schedule_is_a_one_line_error_at_start(tmp_path, cron, tz, message, monkeypatch):
    cfg = cfg_with(tmp_path, cron=cron, tz=tz)
    with pytest.raises(ConfigError) as info:
        schedule.trigger(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)
    from click.testing import CliRunner

    from newsletter.cli import cli

    result = CliRunner().invoke(cli, ["--config", str(cfg.path), "scheduler"])
    assert result.exit_code == 2 and message in result.output


TODAY = dt.datetime.now(UTC).date().isoformat()


def due_sample(folder: Path) -> Path:
    """The sample issue, ready and dated today, so that an every-minute schedule sends it now."""
    return ready_sample(folder, TODAY)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """Whatever a test asserts, the processes it started do not outlive it."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def run_cli(config_path: Path, *args: str, **kw):
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "SENDGRID_API_KEY": "SG.test-key"}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config_path), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    _STARTED.append(proc)
    return proc


@pytest.fixture
def sched_env(tmp_path, sendgrid_server, monkeypatch):
    """A config on the fake SendGrid server, the sample list imported, the sample issue due."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    cfg = cfg_with(tmp_path, cron="* * * * *", api_base=sendgrid_server.url)  # every minute: today's issue is due
    due_sample(tmp_path)
    proc = run_cli(cfg.path, "subscribers", "import", str(SAMPLE), "--list", "weekly")
    assert proc.wait(60) == 0
    return cfg


def test_send_due_sends_once_then_exits_quietly(sched_env, sendgrid_server):
    first = run_cli(sched_env.path, "send", "--due")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert f"{TODAY} to weekly: sent 12" in out
    again = run_cli(sched_env.path, "send", "--due", "--yes")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and out == "" and err == ""
    assert len(sendgrid_server.received) == 12


def test_overlapping_send_due_runs_never_both_send(sched_env, sendgrid_server):
    sendgrid_server.stall = 0.5
    runs = [run_cli(sched_env.path, "send", "--due") for _ in range(2)]
    outputs = [r.communicate(timeout=60) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    assert sorted(sendgrid_server.received) == sorted(set(sendgrid_server.received))
    assert len(sendgrid_server.received) == 12


def test_schedule_commands_pin_list_and_cancel(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    cfg = cfg_with(tmp_path, cron="0 9 * * MON", tz="Europe/Berlin")
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--config", str(cfg.path), *map(str, args)])

    pinned = run("schedule", ready_sample(tmp_path), "--at", "2030-06-03 09:30")
    assert pinned.exit_code == 0, pinned.output
    assert "2030-06-03 09:30 CEST (2030-06-03 07:30 UTC)" in pinned.output
    listing = run("schedule", "list").output
    assert "weekly:weekly  next at " in listing and "  weekly send (0 9 * * MON), " in listing
    pin_line = "pin:2026-12-01:weekly  next at 2030-06-03 09:30 CEST (2030-06-03 07:30 UTC)  2026-12-01 to weekly"
    assert pin_line in listing
    assert run("schedule", ready_sample(tmp_path), "--at", "2030-06-03 10:00").exit_code == 0  # re-pinning replaces
    assert run("schedule", "list").output.count("pin:2026-12-01:weekly") == 1
    past = run("schedule", ready_sample(tmp_path), "--at", "2020-01-01 09:00")
    assert past.exit_code == 2 and "has passed" in past.output
    bad = run("schedule", ready_sample(tmp_path), "--at", "tomorrow")
    assert bad.exit_code == 2 and "use 'YYYY-MM-DD HH:MM'" in bad.output
    assert run("schedule", "cancel", "pin:2026-12-01:weekly").exit_code == 0
    assert "pin:" not in run("schedule", "list").output
    missing = run("schedule", "cancel", "pin:nope")
    assert missing.exit_code == 2 and "no scheduled job 'pin:nope'" in missing.output


def test_a_pin_whose_time_has_come_is_sent_by_cron_once_and_leaves_the_job_store(sched_env, sendgrid_server):
    issue = sched_env.issues_dir / "pinned.md"
    ready_sample(sched_env.issues_dir.parent, "2030-01-01").rename(issue)  # not weekly-due
    (sched_env.issues_dir / f"{TODAY}.md").unlink()  # only the pin is due
    with Store(sched_env) as store:
        schedule.pin(sched_env, store, issue, dt.datetime.now(UTC) + dt.timedelta(seconds=1), "weekly")
    time.sleep(1.5)
    first = run_cli(sched_env.path, "send", "--due")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0 and err == "", err
    assert out.startswith("pinned to weekly: sent 12"), out
    assert "pin:pinned:weekly" not in pinned_jobs(sched_env)  # the scheduler will not send it again
    again = run_cli(sched_env.path, "send", "--due")
    assert again.communicate(timeout=60) == ("", "") and again.returncode == 0
    assert len(sendgrid_server.received) == 12


def test_a_pin_older_than_the_misfire_grace_is_reported_missed_and_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="0 9 1 1 *", grace=1)
    with Store(cfg) as store:
        schedule.pin(cfg, store, ready_sample(tmp_path), dt.datetime.now(UTC) + dt.timedelta(seconds=1), "weekly")
    from newsletter import Newsletter

    with Newsletter(cfg) as nl:
        run = nl.schedule.due("weekly", now=dt.datetime.now(UTC) + dt.timedelta(seconds=30))
    assert run.exit_code == 1 and run.line.startswith("MISSED: pin:2026-12-01:weekly (pinned to ")
    assert f"send it by hand with `newsletter send {tmp_path / 'issues' / '2026-12-01.md'} --list weekly`" in run.line
    assert run.report is None and "pin:2026-12-01:weekly" not in pinned_jobs(cfg)


def test_drafts_are_never_sent_automatically_and_cannot_be_pinned(sched_env, sendgrid_server):
    due = sched_env.issues_dir / f"{TODAY}.md"
    due.write_text(due.read_text().replace("---\n\n", "draft: true\n---\n\n", 1))
    with Store(sched_env) as store:
        assert schedule.plan_due(sched_env, store, "weekly").due == []
        with pytest.raises(ContentError, match=r"is a draft \(draft: true\); remove that line to pin it"):
            schedule.pin(sched_env, store, due, dt.datetime.now(UTC) + dt.timedelta(hours=1), "weekly")
    proc = run_cli(sched_env.path, "send", "--due")
    assert proc.communicate(timeout=60) == ("", "") and proc.returncode == 0
    assert sendgrid_server.received == []
    bad = due.read_text().replace("draft: true", "draft: maybe")
    due.write_text(bad)
    with pytest.raises(ContentError, match=r":\d+: draft: 'maybe' must be true or false"):
        content.parse(due)


def test_send_due_dry_run_says_what_would_go_now_and_sends_nothing(sched_env, sendgrid_server, tmp_path):
    proc = run_cli(sched_env.path, "send", "--due", "--dry-run", "--out", str(tmp_path / "out"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"due now: {sched_env.issues_dir / (TODAY + '.md')} (dated {TODAY}, due at the slot of " in out
    assert "recipients:   12" in out and "nothing was sent or recorded" in out
    assert sendgrid_server.received == []
    with Store(sched_env) as store:
        assert not Ledger(store, TODAY, "weekly", create=False).started()
    assert run_cli(sched_env.path, "send", "--due").wait(60) == 0
    proc = run_cli(sched_env.path, "send", "--due", "--dry-run")
    out, _ = proc.communicate(timeout=60)
    assert out.startswith("nothing is due for weekly now\nnext weekly slot for weekly: ")
    assert out.rstrip().endswith("nothing due for it yet")


def test_schedule_list_names_the_issue_the_next_weekly_slot_sends(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="* * * * *")
    due_sample(tmp_path)
    from newsletter import Newsletter

    with Newsletter(cfg) as nl:
        (weekly,) = nl.schedule.timetable().runs
    assert weekly.description == f"weekly send (* * * * *), sends {tmp_path / 'issues' / (TODAY + '.md')}"


@pytest.mark.slow
def test_no_apscheduler_output_in_any_command_after_the_scheduler_ran(tmp_path, sendgrid_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="0 9 1 1 *", api_base=sendgrid_server.url)
    first = run_cli(cfg.path, "scheduler")
    assert wait_for(lambda: "scheduler started" in (first.stderr.readline() or ""), 30)
    stop(first)
    con = sqlite3.connect(tmp_path / "newsletter.db")
    with con:  # the scheduler's wake-up job is overdue, as it is a minute after any scheduler stopped
        con.execute(f"update {schedule.JOB_TABLE} set next_run_time = 1 where id = 'wake'")
    con.close()
    for _ in range(3):  # the old traceback came from a race: give it chances
        for args in (["schedule", str(ready_sample(tmp_path)), "--at", "2030-06-03 09:30"], ["schedule", "list"],
                     ["send", "--due"], ["send", "--due", "--dry-run"],
                     ["schedule", "cancel", "pin:2026-12-01:weekly"]):
            proc = run_cli(cfg.path, *args)
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and err == "", (args, err)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)


def pinned_jobs(cfg) -> list[str]:
    con = sqlite3.connect(cfg.store.url.removeprefix("sqlite:///"))
    try:
        return [r[0] for r in con.execute(f"select id from {schedule.JOB_TABLE}")]
    finally:
        con.close()


@pytest.mark.slow
def test_pinned_send_survives_a_restart_and_fires_once(tmp_path, sendgrid_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="0 9 1 1 *", api_base=sendgrid_server.url)  # weekly job far away
    assert run_cli(cfg.path, "subscribers", "import", str(SAMPLE), "--list", "weekly").wait(60) == 0
    # --at has minute precision: pin through the library for a time seconds away
    with Store(cfg) as store:
        schedule.pin(cfg, store, ready_sample(tmp_path), dt.datetime.now(UTC) + dt.timedelta(seconds=12), "weekly")
    first = run_cli(cfg.path, "scheduler")
    assert wait_for(lambda: "scheduler started" in (first.stderr.readline() or ""), 30)
    _out, err = stop(first)
    assert first.returncode == 0, err
    assert sendgrid_server.received == []
    jobs = pinned_jobs(cfg)
    assert jobs.count("pin:2026-12-01:weekly") == 1 and jobs.count("weekly:weekly") == 1
    second = run_cli(cfg.path, "scheduler")
    assert wait_for(lambda: len(sendgrid_server.received) == 12, 40)
    _out, err = stop(second)
    assert second.returncode == 0, err
    assert "pinned run: 2026-12-01 to weekly: sent 12" in err
    assert "pin:2026-12-01:weekly" not in pinned_jobs(cfg)  # a pinned send runs once
    assert pinned_jobs(cfg).count("weekly:weekly") == 1  # restarts did not add copies


@pytest.mark.slow
@pytest.mark.parametrize("grace, sent", [(3600, True), (1, False)])
def test_run_missed_while_down_is_sent_within_grace_else_reported(tmp_path, sendgrid_server, monkeypatch, grace, sent):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="0 9 1 1 *", grace=grace, api_base=sendgrid_server.url)
    assert run_cli(cfg.path, "subscribers", "import", str(SAMPLE), "--list", "weekly").wait(60) == 0
    with Store(cfg) as store:
        schedule.pin(cfg, store, ready_sample(tmp_path), dt.datetime.now(UTC) + dt.timedelta(seconds=1), "weekly")
    time.sleep(4)  # the scheduler is down when the send is due
    proc = run_cli(cfg.path, "scheduler")
    if sent:
        assert wait_for(lambda: len(sendgrid_server.received) == 12, 40)
        time.sleep(0.5)
    else:
        time.sleep(4)
    _out, err = stop(proc)
    if sent:
        assert "pinned run: 2026-12-01 to weekly: sent 12" in err
    else:
        assert sendgrid_server.received == []
        assert "MISSED: job pin:2026-12-01:weekly" in err


@pytest.mark.slow
def test_second_scheduler_refuses_to_start(tmp_path, monkeypatch):
    cfg = cfg_with(tmp_path, cron="0 9 1 1 *")
    first = run_cli(cfg.path, "scheduler")
    assert wait_for(lambda: "scheduler started" in (first.stderr.readline() or ""), 30)
    second = run_cli(cfg.path, "scheduler")
    _out, err = second.communicate(timeout=60)
    stop(first)
    assert second.returncode == 2
    assert "another `newsletter scheduler` is running on this store" in err


@pytest.mark.slow
def test_sigterm_during_a_send_stops_cleanly_and_the_next_run_completes(tmp_path, sendgrid_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path, cron="* * * * *", api_base=sendgrid_server.url, batch_size=20)
    # Answers stall 1 s below; the 2 s client timeout of the other tests is too near that on a loaded
    # machine, where a late answer makes its batch unknown and fails the counts below for no fault.
    cfg.path.write_text(cfg.path.read_text().replace("timeout = 2\n", "timeout = 30\n", 1))
    assert "timeout = 30" in cfg.path.read_text()
    cfg = config_mod.load(cfg.path)
    due_sample(tmp_path)
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("email,name\n" + "".join(f"r{i}@example.com,R {i}\n" for i in range(2000)))
    assert run_cli(cfg.path, "subscribers", "import", str(csv_path), "--list", "weekly").wait(60) == 0
    sendgrid_server.stall = 1.0  # 2,000 rows take over 12 s: the SIGTERM lands mid-send even on a busy machine
    proc = run_cli(cfg.path, "scheduler")  # a slot passed within the grace period: it runs at start
    assert wait_for(lambda: len(sendgrid_server.received) >= 40, 40)
    signalled_at = len(sendgrid_server.received)
    _out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err and "scheduler stopped" in err
    with Store(cfg) as store:
        counts = Ledger(store, TODAY, "weekly").counts()
    assert counts["in_flight"] == 0 and counts["unknown"] == 0
    assert 0 < counts["sent"] < 2000 and counts["sent"] + counts["pending"] == 2000, (signalled_at, counts, err)
    sendgrid_server.stall = 0
    finish = run_cli(cfg.path, "send", "--due")
    _out, err = finish.communicate(timeout=60)
    assert finish.returncode == 0, err
    assert sorted(sendgrid_server.received) == sorted(f"r{i}@example.com" for i in range(2000))


def test_commands_that_only_read_the_schedule_create_no_table_and_race_nothing(tmp_path, monkeypatch):
    """Two `send --due` at once on a fresh store used to race to create APScheduler's table."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = cfg_with(tmp_path)
    from newsletter import Newsletter

    with Newsletter(cfg) as nl:
        assert nl.schedule.plan("weekly").due == []
        assert [run.id for run in nl.schedule.timetable().runs] == ["weekly:weekly"]
        assert schedule.JOB_TABLE not in sa.inspect(nl.store.engine).get_table_names()
        with pytest.raises(ConfigError, match="no scheduled job 'pin:x'"):
            nl.schedule.cancel("pin:x")
        assert schedule.JOB_TABLE not in sa.inspect(nl.store.engine).get_table_names()
