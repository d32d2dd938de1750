"""Issues that tests and benchmarks share."""

from __future__ import annotations

from pathlib import Path


def thirteen_items(path: Path) -> Path:
    """An issue of 13 items with what a real one holds: code in bash and C, images, a table, nested lists, quotes."""
    items = []
    for i in range(1, 14):
        items.append(
            f"## {i}. What we learned about pipelines, part {i}\n\n"
            f"[The article](https://example.org/articles/{i}) explains *why* it matters, with `inline code` "
            f"and a **strong claim**.\n\n![Chart {i}](https://example.org/charts/{i}.png){{width=1200 height=600}}\n\n"
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


def typical_items(path: Path, count: int) -> Path:
    """An issue of `count` typical digest items: a linked title, two lines of summary, the source."""
    body = "".join(f"## [How team {i} made their pipeline send exactly once](https://example.org/articles/{i})\n\n"
                   f"A short summary of the article: what they built, what broke, and the one change that fixed "
                   f"their duplicate sends for good.\n\n*example.org*\n\n" for i in range(1, count + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\nsubject: Digest\ndate: 2026-12-01\npreheader: Many links.\n---\n\nHello %%name|there%%,\n\n"
                    + body, encoding="utf-8")
    return path
