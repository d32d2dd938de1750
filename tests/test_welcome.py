"""Welcome mails: sent once to each member who joins by confirming, through the ledger, never to a leaver."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod, tokens
from newsletter.cli import cli
from newsletter.errors import ConfigError, ContentError
from newsletter.schema import deliveries
from newsletter.web import create_app

from . import smtp_server
from .conftest import ROOT, SECRET, ready_sample, wait_for, write_config
from .webhelpers import Served

WELCOME = """---
subject: Welcome to Test Weekly, %%name|friend%%
date: 2026-01-05
---
# Glad you are here

Every Monday: five links worth your time. Reply to this mail to say hello.
"""
TIPS = """---
subject: Three things to know about Test Weekly
date: 2026-01-05
---
# Getting the most out of it

The archive has every past issue.
"""


def welcome_config(tmp_path, smtp_port: int, *, sequence: str = "", url: str = "sqlite:///newsletter.db",
                   base_url: str = "https://testserver"):
    path = write_config(tmp_path, backend="smtp", smtp_port=smtp_port, base_url=base_url)
    (tmp_path / "issues" / "welcome.md").write_text(WELCOME)
    (tmp_path / "issues" / "tips.md").write_text(TIPS)
    text = path.read_text().replace('description = "A test list."',
                                    f'description = "A test list."\nwelcome = "issues/welcome.md"\n{sequence}')
    path.write_text(text.replace("sqlite:///newsletter.db", url))
    return path


@pytest.fixture
def nl(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    with Newsletter(config_mod.load(welcome_config(tmp_path, smtp[0].port))) as newsletter:
        yield newsletter


def join(nl: Newsletter, address: str, list_name: str = "weekly", name: str = "") -> int:
    """A subscribe request confirmed from its link, as the web app does it."""
    request = nl.links.subscribe(address, list_name, name)
    token = tokens.make_confirm(SECRET.encode(), request.subscriber_id, list_name, 3600,
                                tag=tokens.address_tag(request.email))
    nl.links.confirm(token)
    return request.subscriber_id


def welcomes(inbox, address: str, subject: str = "Welcome to Test Weekly") -> int:
    return sum(1 for _from, rcpt, msg in inbox.messages if rcpt == [address] and msg["Subject"].startswith(subject))


def test_a_member_who_confirms_gets_the_welcome_mail_once(nl, smtp):
    inbox = smtp[1]
    join(nl, "new.reader@example.com", name="Ada")
    run = nl.welcome.send_due()
    assert run.exit_code == 0 and "welcome mail welcome to weekly: sent 1" in run.line
    assert welcomes(inbox, "new.reader@example.com") == 1
    mail = next(msg for _f, _r, msg in inbox.messages if msg["Subject"].startswith("Welcome"))
    assert mail["Subject"] == "Welcome to Test Weekly, Ada"
    assert mail["List-Unsubscribe"]  # a welcome mail is list mail: one click leaves
    assert nl.welcome.send_due().line == ""  # nothing more to do: quiet

    # Leaving and coming back (confirming again) is not joining for the first time.
    nl.subscribers.unsubscribe("new.reader@example.com", "weekly")
    join(nl, "new.reader@example.com")
    nl.welcome.send_due()
    assert welcomes(inbox, "new.reader@example.com") == 1
    status = nl.sends.status("welcome", "weekly")
    assert status.counts["sent"] == 1 and status.counts["pending"] == 0


def test_imported_and_added_members_get_no_welcome(nl, smtp):
    nl.subscribers.import_csv(ROOT / "subscribers" / "sample.csv", "weekly")
    nl.subscribers.add("added@example.com", "weekly")
    assert nl.welcome.send_due().reports == []
    assert smtp[1].messages == []


def test_someone_who_leaves_before_it_goes_gets_none(nl, smtp):
    join(nl, "quick.leaver@example.com")
    join(nl, "stayer@example.com")
    nl.subscribers.unsubscribe("quick.leaver@example.com", "weekly")
    (report,) = nl.welcome.send_due().reports
    assert report.this_run["sent"] == 1 and report.skipped_reasons == {"unsubscribed": 1}
    assert [rcpt for _f, rcpt, _m in smtp[1].messages] == [["stayer@example.com"]]


def test_a_sequence_mail_waits_for_its_day(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = welcome_config(tmp_path, smtp[0].port, sequence='sequence = [{ issue = "issues/tips.md", days = 3 }]')
    inbox = smtp[1]
    with Newsletter(config_mod.load(path)) as nl:
        join(nl, "reader@example.com")
        run = nl.welcome.send_due()
        assert run.exit_code == 0 and len(run.reports) == 1
        assert welcomes(inbox, "reader@example.com") == 1
        assert welcomes(inbox, "reader@example.com", "Three things") == 0
        assert nl.sends.status("tips", "weekly").counts["pending"] == 1  # waiting for its day
        assert nl.welcome.send_due().reports == []
        shown = CliRunner().invoke(cli, ["--config", str(path), "status", "tips", "--list", "weekly"])
        assert shown.exit_code == 0, shown.output
        assert "tips to weekly (a welcome mail: members are added as they join)" in shown.output
        assert "pending 1 (1 of them waiting for their time)" in shown.output

        with nl.store.engine.begin() as conn:  # three days pass
            conn.execute(deliveries.update().where(deliveries.c.issue == "tips")
                         .values(retry_after=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=3)))
        assert "tips to weekly: sent 1" in nl.welcome.send_due().line
        assert welcomes(inbox, "reader@example.com", "Three things") == 1
        assert nl.welcome.send_due().line == ""


def test_welcome_mails_are_not_issues(nl, smtp, tmp_path):
    """Not due as the weekly issue, not in the archive, not the newest send of `report`; `status` and
    `report` take them by slug."""
    ready_sample(tmp_path, "2026-12-01")
    (tmp_path / "issues" / "tips.md").unlink()  # not a welcome mail here: an issue of that same Monday
    join(nl, "reader@example.com")
    nl.welcome.send_due()
    assert [item.path.name for item in nl.schedule.plan("weekly", now=dt.datetime(
        2026, 1, 5, 9, 30, tzinfo=dt.UTC)).due] == []  # welcome.md is dated that Monday, and is no issue
    assert nl.issues.archive("weekly") == []
    page = nl.issues.web_version("welcome", "weekly")  # the mail's "view in your browser" link works, unlisted
    assert page is not None and "Glad you are here" in page and "friend" in page
    with pytest.raises(Exception, match="no send yet"):
        nl.sends.report()
    (report,) = nl.sends.report("welcome")
    assert (report.recipients, report.sent) == (1, 1)


def test_send_due_sends_what_is_waiting_and_says_so(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = welcome_config(tmp_path, smtp[0].port)
    with Newsletter(config_mod.load(path)) as nl:
        join(nl, "reader@example.com")
    result = CliRunner().invoke(cli, ["--config", str(path), "send", "--due", "--list", "weekly"])
    assert result.exit_code == 0, result.output
    assert "welcome mail welcome to weekly: sent 1" in result.output
    assert welcomes(smtp[1], "reader@example.com") == 1
    again = CliRunner().invoke(cli, ["--config", str(path), "send", "--due", "--list", "weekly"])
    assert again.exit_code == 0 and again.output == ""


def test_the_web_app_sends_the_welcome_right_after_the_confirmation(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    nl = Newsletter(config_mod.load(welcome_config(tmp_path, smtp[0].port)))
    request = nl.links.subscribe("web.reader@example.com", "weekly")
    link = "/confirm/" + tokens.make_confirm(SECRET.encode(), request.subscriber_id, "weekly", 3600,
                                             tag=tokens.address_tag(request.email))
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get(link)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        done = client.post(link, data={"csrf": csrf})
        assert "a welcome mail is on its way" in done.text
        assert wait_for(lambda: welcomes(smtp[1], "web.reader@example.com") == 1, 20)


@pytest.mark.parametrize(("sequence", "error"), [
    ('sequence = [{ issue = "issues/missing.md", days = 3 }]', r"sequence\[0\] issue: issues/missing.md: no such file"),
    ('sequence = [{ issue = "issues/tips.md", days = 0 }]', r"days: must be positive"),
    ('sequence = [{ issue = "issues/tips.md" }]', r"sequence\[0\]\] days: required key missing"),
    ('sequence = [{ issue = "issues/welcome.md", days = 2 }]', r"each mail may be in it once"),
    ('sequence = "issues/tips.md"', r"expected an array of tables"),
])
def test_a_bad_sequence_is_a_one_line_error(tmp_path, sequence, error):
    path = welcome_config(tmp_path, 25, sequence=sequence)
    with pytest.raises(ConfigError, match=error):
        config_mod.load(path)


def test_a_missing_welcome_file_is_a_one_line_error(tmp_path):
    path = welcome_config(tmp_path, 25)
    (tmp_path / "issues" / "welcome.md").unlink()
    with pytest.raises(ConfigError, match=r"\[lists.weekly\] welcome: issues/welcome.md: no such file"):
        config_mod.load(path)


def _confirm_over_http(url: str, link: str) -> str:
    """Open a confirmation link and press its button, as a browser does (the CSRF cookie included)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(url + link, timeout=60).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf": csrf}).encode()
    return opener.open(url + link, data=body, timeout=60).read().decode()


@pytest.mark.slow
def test_100_concurrent_confirmations_while_cron_runs_give_one_welcome_each(tmp_path, monkeypatch, smtp, store_url):
    """The web app's background sender and `send --due` in a loop race for the same rows: each new
    member gets exactly one welcome; those who left before theirs was sent get none."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    inbox = smtp[1]
    inbox.delay = 0.005  # a relay that takes its time, so the two senders overlap
    port = smtp_server.free_port()
    path = welcome_config(tmp_path, smtp[0].port, url=store_url, base_url=f"http://127.0.0.1:{port}")
    people = [f"reader{n:03}@example.com" for n in range(100)]
    leavers = set(people[::10])
    with Newsletter(config_mod.load(path)) as nl:
        links = {}
        for address in people:
            request = nl.links.subscribe(address, "weekly")
            links[address] = "/confirm/" + tokens.make_confirm(SECRET.encode(), request.subscriber_id, "weekly",
                                                               3600, tag=tokens.address_tag(request.email))
    stop = threading.Event()
    cron_runs: list[subprocess.CompletedProcess[str]] = []

    def cron() -> None:
        while not stop.is_set():
            cron_runs.append(subprocess.run([sys.executable, "-m", "newsletter.cli", "--config", str(path), "send",
                                             "--due", "--list", "weekly"], capture_output=True, text=True))

    def confirm(address: str) -> None:
        assert "You are subscribed" in _confirm_over_http(server.url, links[address])
        if address in leavers:
            with Newsletter(config_mod.load(path)) as own:
                own.subscribers.unsubscribe(address, "weekly")

    with Served(path, port) as server:
        looping = threading.Thread(target=cron)
        looping.start()
        try:
            with ThreadPoolExecutor(max_workers=20) as pool:
                list(pool.map(confirm, people))
            with Newsletter(config_mod.load(path)) as nl:
                assert wait_for(lambda: not nl.sends.status("welcome", "weekly").counts["pending"], 120)
        finally:
            stop.set()
            looping.join()
    assert cron_runs and all(run.returncode == 0 for run in cron_runs), [r.stderr for r in cron_runs if r.returncode]
    with Newsletter(config_mod.load(path)) as nl, nl.store.engine.connect() as conn:
        states = dict(conn.execute(sa.select(deliveries.c.subscriber_id, deliveries.c.state)
                                   .where(deliveries.c.issue == "welcome")).all())
        ids = {address: nl.subscribers.get(address).id for address in people}
    for address in people:
        got = welcomes(inbox, address)
        if address in leavers:  # sent before they left, or skipped: the ledger says which, the inbox agrees
            assert got == (states[ids[address]] == "sent"), (address, states[ids[address]])
        else:
            assert got == 1 and states[ids[address]] == "sent", address


def test_a_broken_welcome_file_stops_the_web_app_from_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = welcome_config(tmp_path, 25)
    (tmp_path / "issues" / "welcome.md").write_text("---\nsubject: Hi\n---\nno date\n")
    with pytest.raises(ContentError, match=r"welcome\.md"):
        create_app(Newsletter(config_mod.load(path)))
