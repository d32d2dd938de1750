"""The messages as sent, scored by SpamAssassin's local tests (no network rules)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from newsletter import Newsletter

from .conftest import ROOT, SECRET, write_config
from .issues import thirteen_items

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = [
    pytest.mark.skipif(not SPAMASSASSIN, reason="spamassassin is not installed (Debian's package of that name; "
                                                ".ci/run installs it)"),
    pytest.mark.slow,
]


@pytest.mark.parametrize("which", ["sample", "thirteen"])
def test_the_messages_score_at_most_one_point(tmp_path, monkeypatch, which):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp")
    issue = ROOT / "issues" / "2026-12-01.md" if which == "sample" else thirteen_items(tmp_path / "issues" / "13.md")
    with Newsletter.from_config(config) as nl:
        nl.subscribers.import_csv(ROOT / "subscribers" / "sample.csv", "weekly")
        report = nl.sends.dry_run(issue, "weekly", out_dir=tmp_path / "out", limit=1)
    eml = next(p for p in report.written if p.suffix == ".eml")
    result = subprocess.run([SPAMASSASSIN or "spamassassin", "-t", "-L"], input=eml.read_bytes(),
                            capture_output=True, timeout=180)
    report_text = result.stdout.decode("utf-8", "replace")
    found = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report_text)
    assert found, report_text[-2000:]
    assert float(found.group(1)) <= 1.0, report_text.split("Content analysis details:")[1][:2000]
