"""How long cron's `newsletter send --due` takes when nothing is due: what every minute costs.

A project made by `newsletter init` (its sample issue made ready for 2099, the sample list imported), then
with back-issues dated 2019 beside it, which the due rule lists and never sends. Each figure is
the median wall time of whole `send --due` processes.

    python bench/due.py [--runs 15] [--back-issues 0,50]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def newsletter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Bytecode is written and read as on an installed system (an installer compiles it), whatever this
    # shell says.
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run([sys.executable, "-m", "newsletter.cli", "--config", str(config), *args], env=env,
                          capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--back-issues", default="0,50")
    options = parser.parse_args()
    print(f"{'back-issues':>11}  {'median ms':>9}  {'min ms':>7}  {'max ms':>7}")
    for count in (int(n) for n in options.back_issues.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "letter"
            subprocess.run([sys.executable, "-m", "newsletter.cli", "init", str(folder)], check=True,
                           capture_output=True)
            config = folder / "config.toml"
            sample = folder / "issues" / "2026-12-01.md"
            ready = re.sub(r"^draft: true.*\n", "", sample.read_text(), flags=re.M)
            sample.write_text(ready.replace("date: 2026-12-01", "date: 2099-01-05"))  # ready, and not due yet
            for n in range(count):
                day = f"2019-{1 + n // 28:02d}-{1 + n % 28:02d}"
                (folder / "issues" / f"{day}.md").write_text(ready.replace("date: 2026-12-01", f"date: {day}"))
            newsletter(config, "subscribers", "import", str(folder / "subscribers" / "sample.csv"), "--list", "weekly")
            newsletter(config, "send", "--due")  # the first run writes the bytecode
            times = []
            for _ in range(options.runs):
                start = time.perf_counter()
                done = newsletter(config, "send", "--due")
                times.append((time.perf_counter() - start) * 1000)
                if done.returncode != 0 or done.stdout:
                    raise SystemExit(f"send --due did something: {done.returncode} {done.stdout} {done.stderr}")
            print(f"{count:>11}  {statistics.median(times):>9.0f}  {min(times):>7.0f}  {max(times):>7.0f}")


if __name__ == "__main__":
    main()
