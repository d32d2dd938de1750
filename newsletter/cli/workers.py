"""`send --workers N`: the other processes of one send, each a worker sharing the ledger.

One Python process holds one core; a send that a core cannot keep up with (many requests in
flight, a fast provider) gets more by running as several processes. They need nothing but the
ledger to share the work: each claims its own batches, and every guarantee of one worker holds
for several (the worker and SIGKILL tests run them as separate processes too). The process
that was started starts the others, sends its own share, waits for them, and reports the whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import click


def count(text: str) -> int:
    """`N` or `auto` (one per core this process may use) as a number of worker processes."""
    if text == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{text!r}: give a number of processes (1 or more) or 'auto'", param_hint="--workers")
    return int(text)


class Helpers:
    """The other worker processes: started with the same send, stopped with the same signal."""

    def __init__(self, arguments: list[str], number: int) -> None:
        command = [sys.executable, "-m", "newsletter.cli", *arguments]
        # Each one's stderr, and the figures it leaves for this one's metrics, read when it has exited.
        self._logs: list[IO[bytes]] = [tempfile.TemporaryFile() for _ in range(number)]  # noqa: SIM115
        self._folder = tempfile.TemporaryDirectory(prefix="newsletter-workers-")
        self._shares = [Path(self._folder.name) / f"worker-{i}.prom" for i in range(2, number + 2)]
        self._procs = [subprocess.Popen([*command, "--share-figures", str(share)], stdin=subprocess.DEVNULL,  # noqa: S603
                                        stdout=subprocess.DEVNULL, stderr=log)
                       for log, share in zip(self._logs, self._shares, strict=True)]
        self._done = threading.Event()
        self.figures: list[str] = []  # what each left of its figures (see `Monitoring.share`), once they ended

    def forward(self, stopped: Callable[[], int | None]) -> None:
        """From a thread: pass this process's stop signal on to the others as soon as it comes."""
        def watch() -> None:
            while not self._done.wait(0.05):
                signum = stopped()
                if signum is not None:
                    for proc in self._procs:
                        if proc.poll() is None:
                            proc.send_signal(signum)
                    return

        threading.Thread(target=watch, name="forward-stop", daemon=True).start()

    def wait(self) -> list[tuple[int, str]]:
        """Each one's exit code, and its last line on stderr when it failed."""
        results = []
        for proc, log in zip(self._procs, self._logs, strict=True):
            code = proc.wait()
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            log.close()
            results.append((code, lines[-1] if lines and code not in (0, 1, 3) else ""))
        self.figures.extend(share.read_text() for share in self._shares if share.is_file())
        self._folder.cleanup()
        self._done.set()
        return results

    def stop(self) -> None:
        """The command is failing: the others stop too (each finishes its batch with the provider)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self.wait()
