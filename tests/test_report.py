"""`newsletter report`: the ledger and the provider's events, as counts of people and rates."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest

from newsletter import Newsletter, events
from newsletter.webhooks.base import TrackingEvent

from . import browser
from .conftest import ROOT, SAMPLE_ISSUE, ready_sample


def event(kind: str, email: str, issue: str, minutes: int, **kw) -> TrackingEvent:
    at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    return TrackingEvent(kind=kind, email=email, timestamp=at, event_id=f"{issue}-{kind}-{email}-{minutes}-{kw}",
                         issue=issue, list_name="weekly", **kw)


@pytest.fixture
def sent(sg_config, sg_run, tmp_path):
    """The sample issue and a second one sent to the 12 people of the sample list, with events."""
    assert sg_run("subscribers", "import", ROOT / "subscribers" / "sample.csv", "--list", "weekly").exit_code == 0
    second = tmp_path / "issues" / "second.md"
    second.write_text(SAMPLE_ISSUE.read_text().replace('subject: "', 'subject: "=HYPERLINK(1) ')
                      .replace("date: 2026-12-01", "date: 2026-12-08"))
    for issue in (SAMPLE_ISSUE, second):
        assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    with Newsletter.from_config(sg_config) as nl:
        people = [row["email"] for row in csv.DictReader((ROOT / "subscribers" / "sample.csv").open())][:12]
        batch = [event("delivered", e, "2026-12-01", 1) for e in people[:10]]
        batch += [event("bounced", people[10], "2026-12-01", 1, reason="550 no such user")]
        batch += [event("opened", e, "2026-12-01", 30 + i) for i, e in enumerate(people[:4])]
        batch += [event("opened", people[0], "2026-12-01", 90 + i) for i in range(2)]  # the same person again
        batch += [event("clicked", people[0], "2026-12-01", 40 + i, reason="https://example.org/a") for i in range(2)]
        batch += [event("clicked", people[1], "2026-12-01", 50, reason="https://example.org/b")]
        batch += [event("unsubscribed", people[2], "2026-12-01", 60)]
        batch += [event("complained", people[3], "2026-12-01", 70)]
        batch += [event("delivered", e, "second", 1) for e in people[:9]]
        batch += [event("opened", e, "second", 5) for e in people[:1]]
        events.apply(nl.store, batch, "test")
    return sg_config


def test_one_issue_counts_people_not_events_with_rates_and_top_links(sent):
    with Newsletter.from_config(sent) as nl:
        (report,) = nl.sends.report("2026-12-01")
    assert (report.recipients, report.sent, report.delivered, report.bounced) == (12, 12, 10, 1)
    assert (report.opened, report.clicked, report.unsubscribed, report.complained) == (4, 2, 1, 1)
    assert report.rates["opened"] == 0.4 and report.rates["clicked"] == 0.2 and report.rates["click_to_open"] == 0.5
    assert report.rates["bounced"] == 1 / 12
    assert [(link.url, link.clicks, link.people) for link in report.top_links] == [
        ("https://example.org/a", 2, 1), ("https://example.org/b", 1, 1)]
    assert report.timeline[0][0] == 12  # all handed over in the first hour
    assert sum(hour[1] for hour in report.timeline.values()) == 4  # first opens only


def test_the_cli_report_text_json_csv_and_all(sent, sg_run):
    text = sg_run("report", SAMPLE_ISSUE)
    assert text.exit_code == 0, text.output
    row = next(line for line in text.output.splitlines() if line.startswith("2026-12-01"))
    assert "10 (83.3 %)" in row and "4 (40.0 %)" in row and "2 (20.0 %)" in row
    assert "2 clicks       1 people  https://example.org/a" in text.output
    newest = json.loads(sg_run("report", "--json").output)
    assert [r["issue"] for r in newest] == ["second"]  # no issue: the newest send
    every = json.loads(sg_run("report", "--all", "--json").output)
    assert [r["issue"] for r in every] == ["second", "2026-12-01"]
    assert (every[0]["delivered"], every[0]["opened"]) == (9, 1)  # each issue's events are its own
    assert every[1]["rates"]["opened"] == 0.4 and every[1]["timeline"][0]["sent"] == 12
    rows = list(csv.DictReader(io.StringIO(sg_run("report", "--all", "--csv").output)))
    assert rows[0]["subject"].startswith("'=HYPERLINK(1)")  # a spreadsheet shows it, never runs it
    assert rows[1]["opened"] == "4" and rows[1]["opened_rate"] == "0.4"
    missing = sg_run("report", "nope")
    assert missing.exit_code == 2 and missing.output.strip() == "error: no send of nope (sent: 2026-12-01, second)"
    status = sg_run("status", "2026-12-01", "--list", "weekly", "--json")  # status takes a slug too
    assert json.loads(status.output)["counts"]["sent"] == 12


@pytest.mark.browser
def test_the_html_report_is_one_page_whose_plots_chromium_draws(sent, sg_run, tmp_path):
    page = tmp_path / "report.html"
    result = sg_run("report", "--all", "--html", page)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.split("<svg", 1)[0]  # self-contained
    checker = tmp_path / "check.html"
    checker.write_text(html.replace("</body>", """<script>
      var figures = Array.prototype.map.call(document.querySelectorAll('figure svg'), function (svg) {
        var box = svg.getBoundingClientRect();
        var lines = Array.prototype.filter.call(svg.querySelectorAll('path'), function (p) {
          var b = p.getBBox(); return b.width > 50;
        });
        return {width: box.width, height: box.height, lines: lines.length};
      });
      var out = document.createElement('pre'); out.id = 'drawn'; out.textContent = JSON.stringify(figures);
      document.body.appendChild(out);
    </script></body>"""))
    dom = browser.run(["--window-size=1200,900", "--virtual-time-budget=3000", "--dump-dom", checker.as_uri()],
                      tmp_path / "profile").stdout
    found = re.search(r'<pre id="drawn">(.*?)</pre>', dom)
    assert found, dom[-500:]
    figures = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(figures) == 3  # a timeline per send, then rates across sends
    for figure in figures:
        assert figure["width"] > 300 and figure["height"] > 100 and figure["lines"] >= 3, figure


def test_json_for_scripts_from_lists_and_the_dry_run(sent, sg_run):
    lists = json.loads(sg_run("subscribers", "lists", "--json").output)
    weekly = lists["weekly"]  # the bounce, the complaint and the unsubscribe acted on the list
    assert (weekly["active"], weekly["bounced"], weekly["complained"], weekly["unsubscribed"]) == (9, 1, 1, 1)
    dry = json.loads(sg_run("send", SAMPLE_ISSUE, "--list", "weekly", "--dry-run", "--json").output)
    assert dry["issue"] == "2026-12-01" and dry["already_sent"] == 12 and dry["recipients"] == 0
    assert dry["compatibility"]["features_used"] > 40
    refused = sg_run("send", SAMPLE_ISSUE, "--list", "weekly", "--json", "--yes")
    assert refused.exit_code == 2 and "--json goes with --dry-run" in refused.output


@pytest.mark.parametrize("rate, shown", [(4 / 19_977, "0.020 %"), (3 / 1000, "0.30 %"), (1 / 1_000_000, "0.00010 %"),
                                         (0.0, "0 %"), (1 / 12, "8.3 %"), (1.0, "100.0 %"), (None, "n/a")])
def test_rates_below_one_percent_keep_two_significant_digits(rate, shown):
    from newsletter.report import percent

    assert percent(rate) == shown


def test_the_text_report_shows_small_rates_and_the_sent_and_pending_columns(sg_config, sg_run, tmp_path):
    rows = tmp_path / "many.csv"
    rows.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(300)))
    assert sg_run("subscribers", "import", rows, "--list", "weekly").exit_code == 0
    issue = ready_sample(tmp_path)
    assert sg_run("send", issue, "--list", "weekly", "--yes", "--limit", "200").exit_code == 3
    with Newsletter.from_config(sg_config) as nl:
        events.apply(nl.store, [event("complained", "r7@example.com", "2026-12-01", 1)], "test")
    table = sg_run("report", "2026-12-01").output
    header, row = table.splitlines()[:2]
    assert re.split(r"\s{2,}|\s(?=\S)", header.strip())[:5] == ["issue", "list", "recipients", "sent", "pending"]
    assert "300" in row and "200" in row and "100" in row
    assert "1 (0.50 %)" in row  # 1 complaint of 200 handed over: not "0.5 %" nor "0.0 %"


def test_a_send_over_smtp_shows_na_for_what_only_events_can_tell(tmp_path, monkeypatch):
    from . import smtp_server
    from .conftest import SECRET, write_config

    controller, _inbox = smtp_server.start()
    try:
        monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
        path = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
        with Newsletter.from_config(path) as nl:
            nl.subscribers.import_csv(ROOT / "subscribers" / "sample.csv", "weekly")
            nl.sends.send(ready_sample(tmp_path), "weekly")
            (report,) = nl.sends.report("2026-12-01")
        assert report.sent == 12 and report.rates["delivered"] is None and report.rates["opened"] is None
        from click.testing import CliRunner

        from newsletter.cli import cli

        row = CliRunner().invoke(cli, ["--config", str(path), "report"]).output.splitlines()[1]
        assert "n/a" in row and "0.0 %" not in row
    finally:
        controller.stop()


def test_machine_opens_are_counted_apart_from_peoples_opens(sg_config, sg_run):
    """A mail client that fetches every image (Apple's privacy protection, a scanner) is no reader."""
    assert sg_run("subscribers", "import", ROOT / "subscribers" / "sample.csv", "--list", "weekly").exit_code == 0
    ready_sample(sg_config.parent)
    assert sg_run("send", sg_config.parent / "issues" / "2026-12-01.md", "--list", "weekly", "--yes").exit_code == 0
    people = [row["email"] for row in csv.DictReader((ROOT / "subscribers" / "sample.csv").open())][:12]
    with Newsletter.from_config(sg_config) as nl:
        batch = [event("delivered", e, "2026-12-01", 1) for e in people[:10]]
        batch += [event("opened", e, "2026-12-01", 2, machine=True) for e in people[:6]]  # fetched on arrival
        batch += [event("opened", e, "2026-12-01", 30) for e in people[:2]]  # and two of them read it
        events.apply(nl.store, batch, "test")
        (report,) = nl.sends.report("2026-12-01")
    assert (report.opened, report.machine_opened) == (2, 4)
    assert report.rates["opened"] == 0.2  # people over delivered, machines left out
    assert report.table_cells()["machine opens"] == "4"
    assert "machine_opened" in nl.sends.report_csv([report]).splitlines()[0].split(",")


def test_the_providers_machine_flags_reach_the_event():
    from newsletter.webhooks.mailgun import parse_call
    from newsletter.webhooks.sendgrid import parse_events

    sendgrid = parse_events(json.dumps([
        {"email": "a@example.com", "event": "open", "timestamp": 1, "sg_machine_open": True, "sg_event_id": "1"},
        {"email": "b@example.com", "event": "open", "timestamp": 1, "sg_machine_open": False, "sg_event_id": "2"},
    ]).encode())
    assert [e.machine for e in sendgrid] == [True, False]
    bot = parse_call(json.dumps({"event-data": {"event": "opened", "recipient": "a@example.com", "timestamp": 1,
                                                "client-info": {"bot": "apple"}}}).encode())
    person = parse_call(json.dumps({"event-data": {"event": "opened", "recipient": "a@example.com", "timestamp": 1,
                                                   "client-info": {"bot": ""}}}).encode())
    assert (bot[0].machine, person[0].machine) == (True, False)
