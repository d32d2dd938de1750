"""`newsletter init --systemd`: the units the README shows, with this project's paths filled in."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli

from .conftest import SECRET


def _project(tmp_path: Path) -> Path:
    folder = tmp_path / "my news 100%"  # a space and a systemd specifier, which must both be escaped
    assert CliRunner().invoke(cli, ["init", str(folder)]).exit_code == 0
    return folder / "config.toml"


def _exec_start(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return [word.replace("%%", "%") for word in shlex.split(line.removeprefix("ExecStart="))]


def test_units_for_both_ways_with_the_paths_filled_in(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = _project(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "init", "--systemd"])
    assert result.exit_code == 0, result.output
    folder = config.parent / "systemd"
    assert sorted(p.name for p in folder.iterdir()) == ["newsletter-due.service", "newsletter-due.timer",
                                                        "newsletter-scheduler.service", "newsletter-web.service"]
    due = (folder / "newsletter-due.service").read_text()
    assert _exec_start(due) == [sys.executable, "-m", "newsletter.cli", "--config", str(config), "send", "--due"]
    assert f"WorkingDirectory={str(config.parent).replace('%', '%%')}" in due and "Type=oneshot" in due
    assert "EnvironmentFile=/etc/newsletter.env" in due and SECRET not in due
    assert "OnCalendar=minutely" in (folder / "newsletter-due.timer").read_text()
    assert _exec_start((folder / "newsletter-scheduler.service").read_text())[-1] == "scheduler"
    assert _exec_start((folder / "newsletter-web.service").read_text())[-1] == "serve"
    assert "newsletter-due.timer" in result.output and "not both" in result.output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_reads_the_units_without_a_complaint(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = _project(tmp_path)
    assert CliRunner().invoke(cli, ["--config", str(config), "init", "--systemd"]).exit_code == 0
    units = sorted((config.parent / "systemd").iterdir())
    analyze = shutil.which("systemd-analyze") or "systemd-analyze"
    checked = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_bounce_mailbox_gets_its_own_timer(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = _project(tmp_path)
    text = config.read_text().replace('host = ""', 'host = "imap.example.com"', 1)
    config.write_text(text.replace("every = 300", "every = 600", 1))
    assert CliRunner().invoke(cli, ["--config", str(config), "init", "--systemd"]).exit_code == 0
    folder = config.parent / "systemd"
    assert _exec_start((folder / "newsletter-bounces.service").read_text())[-2:] == ["bounces", "fetch"]
    assert "OnCalendar=*:0/10" in (folder / "newsletter-bounces.timer").read_text()


def test_units_already_there_are_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = _project(tmp_path)
    out = tmp_path / "units"
    out.mkdir()
    (out / "newsletter-web.service").write_text("mine")
    result = CliRunner().invoke(cli, ["--config", str(config), "init", "--systemd", str(out)])
    assert result.exit_code == 2 and "newsletter-web.service: already exists" in result.output
    assert "`newsletter init --systemd FOLDER`" in result.output and "--out" not in result.output  # no such option
    assert sorted(p.name for p in out.iterdir()) == ["newsletter-web.service"]
    assert (out / "newsletter-web.service").read_text() == "mine"
