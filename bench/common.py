"""Helpers shared by the benchmarks: a throwaway config and a child's peak memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

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


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run `newsletter ARGS` in a child process: (seconds, peak RSS in MB, stdout)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "newsletter.cli", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode not in (0,):
        raise SystemExit(f"newsletter {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak, result.stdout
