"""Helpers shared by the benchmarks: a throwaway config and a child's peak memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, api_base: str = "https://api.sendgrid.com") -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""
[newsletter]
name = "Bench Weekly"
from_email = "weekly@example.com"
base_url = "https://news.example.com"
templates = "{ROOT / 'templates'}"
[store]
url = "sqlite:///bench.db"
[lists.weekly]
title = "Bench Weekly"
[sendgrid]
api_base = "{api_base}"
timeout = 60
""",
        encoding="utf-8",
    )
    return path


# Runs the command as its own child and reports that child's peak RSS alone, so that earlier
# steps of a benchmark (an import, say) do not count.
_WRAPPER = (
    "import resource, subprocess, sys, time;"
    "t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); t = time.perf_counter() - t;"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print(f'@@ {r.returncode} {t} {u.ru_maxrss} {u.ru_utime + u.ru_stime}', file=sys.stderr)"
)


class Measured(NamedTuple):
    seconds: float
    peak_mb: float
    stdout: str
    cpu_seconds: float  # user and system time of the command


def run_measured(args: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
                 program: tuple[str, ...] = ("-m", "newsletter.cli")) -> Measured:
    """Run `newsletter ARGS` (or another Python `program`) in a child process: its wall seconds, peak
    RSS, stdout and CPU seconds; an exit code not in `ok` stops the benchmark."""
    result = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, *program, *args],
                            capture_output=True, text=True, env=env)
    marker = result.stderr.rsplit("@@ ", 1)[-1].split()
    code, seconds, peak_kb, cpu = int(marker[0]), float(marker[1]), int(marker[2]), float(marker[3])
    if code not in ok:
        raise SystemExit(f"newsletter {' '.join(args)} failed ({code}): {result.stderr.strip()[-2000:]}")
    return Measured(seconds, peak_kb / 1024, result.stdout, cpu)
