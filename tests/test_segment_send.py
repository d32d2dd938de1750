"""Sending to a segment: the audience is fixed when the send starts, whatever changes after; named
segments from the config; two overlapping segments of one list reach each person once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from newsletter import config as config_mod
from newsletter.ledger import Ledger
from newsletter.store import Store

from .conftest import ROOT, SECRET, wait_for

SAMPLE = ROOT / "subscribers" / "sample.csv"
PEOPLE = [line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:]]
VIP = PEOPLE[:5]


@pytest.fixture
def segmented(sg_run):
    assert sg_run("subscribers", "import", SAMPLE, "--list", "weekly").exit_code == 0
    for email in VIP:
        assert sg_run("subscribers", "tag", email, "vip").exit_code == 0
    return sg_run


def ledger_rows(config) -> dict[str, int]:
    with Store(config_mod.load(config)) as store:
        return Ledger(store, "2026-12-01", "weekly").counts()


def test_a_segment_send_reaches_its_members_only_and_says_so(segmented, sg_config, sendgrid_server, sample_issue):
    dry = segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--dry-run")
    assert dry.exit_code == 0 and "recipients:   5 in 1 batches" in dry.output
    assert segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--yes").exit_code == 0
    assert sorted(sendgrid_server.received) == sorted(VIP)
    status = segmented("status", sample_issue, "--list", "weekly")
    assert "(segment tag:vip)" in status.output and "sent 5" in status.output


def test_the_audience_is_fixed_when_the_send_starts(segmented, sg_config, sendgrid_server, sample_issue):
    first = segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--yes", "--limit", "2")
    assert first.exit_code == 3 and len(sendgrid_server.received) == 2  # stopped with rows pending
    segmented("subscribers", "untag", VIP[4], "vip")  # changes after the start change nothing
    segmented("subscribers", "tag", PEOPLE[8], "vip")
    assert segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--yes").exit_code == 0
    assert sorted(sendgrid_server.received) == sorted(VIP)
    assert segmented("send", sample_issue, "--list", "weekly", "--yes").exit_code == 0  # a resume, not the list
    assert sorted(sendgrid_server.received) == sorted(VIP)


def test_two_overlapping_segments_of_one_list_reach_each_person_once(segmented, sg_config, sendgrid_server,
                                                                     sample_issue):
    for email in PEOPLE[3:8]:
        segmented("subscribers", "tag", email, "beta")
    from newsletter.report import build

    assert segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--yes").exit_code == 0
    second = segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:beta", "--yes", "--limit", "1")
    assert second.exit_code == 3
    with Store(config_mod.load(sg_config)) as store:
        assert build(store, "2026-12-01", "weekly").finished_at is None  # not finished while the new rows wait
    assert segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:beta", "--yes").exit_code == 0
    assert sorted(sendgrid_server.received) == sorted(PEOPLE[:8])  # the union, each once
    assert "(segment tag:vip; tag:beta)" in segmented("status", sample_issue, "--list", "weekly").output
    with Store(config_mod.load(sg_config)) as store:
        report = build(store, "2026-12-01", "weekly")
    assert report.recipients == report.sent == 8 and report.finished_at is not None


def test_a_named_segment_from_the_config(segmented, sg_config, sendgrid_server, sample_issue):
    sg_config.write_text(sg_config.read_text() + '\n[segments.vips]\nlist = "weekly"\nwhere = "tag:vip"\n')
    assert segmented("send", sample_issue, "--segment", "vips", "--yes").exit_code == 0
    assert sorted(sendgrid_server.received) == sorted(VIP)
    wrong = segmented("send", sample_issue, "--list", "daily", "--segment", "vips", "--yes")
    assert wrong.exit_code != 0 and "segment 'vips' is of list 'weekly', not 'daily'" in wrong.output


def test_a_bad_segment_is_one_line_and_sends_nothing(segmented, sg_config, sendgrid_server, sample_issue):
    result = segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip;drop", "--yes")
    assert result.exit_code != 0 and "segment: not understood at column 8" in result.output
    assert sendgrid_server.received == [] and ledger_rows(sg_config).get("pending", 0) == 0


def test_a_segmented_send_killed_and_resumed_reaches_exactly_the_segment_of_its_start(sg_run, sg_config,
                                                                                      sendgrid_server, sample_issue,
                                                                                      tmp_path):
    people = tmp_path / "many.csv"
    people.write_text("email,tags\n" + "".join(f"reader{i}@example.org,{'vip' if i % 3 == 0 else ''}\n"
                                               for i in range(600)))
    assert sg_run("subscribers", "import", people, "--list", "weekly").exit_code == 0
    sg_config.write_text(sg_config.read_text().replace("batch_size = 1000", "batch_size = 5"))
    vip = {f"reader{i}@example.org" for i in range(600) if i % 3 == 0}
    sendgrid_server.latency = 0.15
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "SENDGRID_API_KEY": "SG.test-key"}
    command = [sys.executable, "-m", "newsletter.cli", "--config", str(sg_config), "send", str(sample_issue),
               "--list", "weekly", "--segment", "tag:vip", "--yes"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(sendgrid_server.received) >= 20, 30), "the send never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for i in range(1, 40, 3):  # after the start: new vips, and vips no longer
        sg_run("subscribers", "tag", f"reader{i}@example.org", "vip")
        sg_run("subscribers", "untag", f"reader{i - 1}@example.org", "vip")
    sendgrid_server.latency = 0
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode in (0, 1), resumed.stderr
    counts = ledger_rows(sg_config)
    assert set(sendgrid_server.received) <= vip and len(sendgrid_server.received) == len(set(sendgrid_server.received))
    assert counts["sent"] + counts["unknown"] == len(vip) and counts["pending"] == 0


def test_export_where_writes_the_segments_members_only(segmented):
    exported = segmented("subscribers", "export", "--list", "weekly", "--where", "tag:vip").output
    rows = exported.strip().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == sorted(VIP)


def test_the_schedule_can_send_to_a_segment(segmented, sg_config, sendgrid_server, tmp_path):
    from newsletter import Newsletter

    from .conftest import ready_sample

    sample_issue = ready_sample(tmp_path)
    sg_config.write_text(sg_config.read_text() + '\n[segments.vips]\nlist = "weekly"\nwhere = "tag:vip"\n'
                         '\n[schedule]\nlist = "weekly"\nsegment = "vips"\n')
    with Newsletter.from_config(sg_config) as nl:
        run = nl.schedule.due("weekly", issue_path=sample_issue)  # what a pinned job of the scheduler runs
    assert run.exit_code == 0 and sorted(sendgrid_server.received) == sorted(VIP), run.line


def test_report_names_the_segment(segmented, sample_issue):
    assert segmented("send", sample_issue, "--list", "weekly", "--segment", "tag:vip", "--yes").exit_code == 0
    report = segmented("report", sample_issue, "--list", "weekly")
    assert "went to the segment tag:vip" in report.output
    assert '"segment": "tag:vip"' in segmented("report", sample_issue, "--list", "weekly", "--json").output
