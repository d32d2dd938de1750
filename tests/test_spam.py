"""The messages as sent, scored by SpamAssassin's local tests (no network rules)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from newsletter import Newsletter

from .conftest import ROOT, SECRET, write_config

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = [
    pytest.mark.skipif(not SPAMASSASSIN, reason="spamassassin is not installed (Debian's package of that name; "
                                                ".ci/run installs it)"),
    pytest.mark.slow,
]


def thirteen_items(path):
    """An issue of 13 items with what a real one holds: code in bash and C, images, a table, nested lists, quotes."""
    items = []
    for i in range(1, 14):
        items.append(
            f"## {i}. What we learned about pipelines, part {i}\n\n"
            f"[The article](https://example.org/articles/{i}) explains *why* it matters, with `inline code` "
            f"and a **strong claim**.\n\n![Chart {i}](https://example.org/charts/{i}.png)\n\n"
            "- first point\n- second point\n  1. nested detail\n  2. another\n\n"
            "> A quote from the article that sums it up.\n\n"
            + ("```bash\nfor f in *.csv; do\n  newsletter subscribers import \"$f\" --list weekly\ndone\n```\n"
               if i % 2 else
               "```c\nint main(void) {\n    for (int i = 0; i < 10; i++) {\n        printf(\"%d\\n\", i);\n"
               "    }\n    return 0;\n}\n```\n")
            + ("\n| tool | size | clipped |\n| --- | --- | --- |\n| ours | 26 KB | no |\n| theirs | 131 KB | yes |\n"
               if i == 7 else ""))
    path.write_text("---\nsubject: \"The Pipeline Weekly #49: thirteen things\"\ndate: 2026-12-08\n"
                    "preheader: Thirteen links on sending mail well.\n---\n\nHello %%name|there%%,\n\n"
                    + "\n".join(items), encoding="utf-8")
    return path


@pytest.mark.parametrize("which", ["sample", "thirteen"])
def test_the_messages_score_at_most_one_point(tmp_path, monkeypatch, which):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path, backend="smtp")
    issue = ROOT / "issues" / "2026-12-01.md" if which == "sample" else thirteen_items(tmp_path / "issues" / "13.md")
    with Newsletter.from_config(config) as nl:
        nl.import_csv(ROOT / "subscribers" / "sample.csv", "weekly")
        report = nl.dry_run(issue, "weekly", out_dir=tmp_path / "out", limit=1)
    eml = next(p for p in report.written if p.suffix == ".eml")
    result = subprocess.run([SPAMASSASSIN or "spamassassin", "-t", "-L"], input=eml.read_bytes(),
                            capture_output=True, timeout=180)
    report_text = result.stdout.decode("utf-8", "replace")
    found = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report_text)
    assert found, report_text[-2000:]
    assert float(found.group(1)) <= 1.0, report_text.split("Content analysis details:")[1][:2000]
