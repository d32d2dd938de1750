"""Milliseconds per full render (Markdown to final HTML and text, with the compatibility check
that every render runs), median of repeated runs, and the check's own share; then the bytes a
typical digest item costs (a linked title, a two-line summary, its source) and how many fit under
Gmail's clip as delivered, with click tracking off and on.

    python bench/render.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter import compat, config, content, render  # noqa: E402
from newsletter.templates import Templates  # noqa: E402
from tests.issues import thirteen_items, typical_items  # noqa: E402


def generated_issue(folder: Path, items: int) -> Path:
    body = "\n".join(
        f"## {i}. A linked item about pipelines, number {i}\n\n"
        f"[Read the article](https://example.org/articles/{i}) explains *why* it matters, with "
        f"`inline code`, a **strong claim** & a literal < sign.\n\n- first point\n- second point\n"
        f"  1. nested\n\n```python\nfor row in rows:\n    send(row)  # item {i}\n```\n"
        for i in range(1, items + 1)
    )
    path = folder / f"generated-{items}.md"
    path.write_text(f"---\nsubject: Generated {items}\ndate: 2026-12-01\npreheader: bench\n---\n\n{body}")
    return path


def median_ms(path: Path, cfg: config.Config, runs: int) -> tuple[float, float, int]:
    times, checks, size = [], [], 0
    for _ in range(runs + 2):
        start = time.perf_counter()
        issue = content.parse(path, base_url=cfg.newsletter.base_url)
        rendered = render.render(issue, cfg.newsletter, Templates(cfg.templates_dir))
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        compat.check(rendered.html)
        checks.append(time.perf_counter() - start)
        size = rendered.size
    # the first runs warm cssutils' caches
    return statistics.median(times[2:]) * 1000, statistics.median(checks[2:]) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    cfg = config.load(ROOT / "config.toml")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("sample issue", ROOT / "issues" / "2026-12-01.md"),
                 ("13 rich items", thirteen_items(Path(tmp) / "thirteen.md"))]
        cases += [(f"{n}-item issue", generated_issue(Path(tmp), n)) for n in (13, 50)]
        for label, path in cases:
            ms, check_ms, size = median_ms(path, cfg, args.runs)
            print(f"{label:>15}: {ms:6.1f} ms per render, of which {check_ms:4.1f} ms the compatibility check "
                  f"(median of {args.runs}), HTML {size / 1024:.1f} KB")
        for tracking in (False, True):
            delivered = {n: render.render(content.parse(typical_items(Path(tmp) / f"t{n}.md", n),
                                                        base_url=cfg.newsletter.base_url),
                                          cfg.newsletter, Templates(cfg.templates_dir), click_tracking=tracking)
                         for n in (10, 20)}
            per_item = (delivered[20].size - delivered[10].size) / 10
            as_delivered = (delivered[20].delivered - delivered[10].delivered) / 10
            rest = delivered[10].delivered - 10 * as_delivered
            print(f"typical item, click tracking {'on' if tracking else 'off'}: {per_item:.0f} bytes rendered, "
                  f"{as_delivered:.0f} as delivered; {int((render.GMAIL_CLIP_BYTES - rest) / as_delivered)} items fit "
                  f"under Gmail's clip")


if __name__ == "__main__":
    main()
