"""On a terminal: the progress displays of `subscribers import` and `send`, run in a real pseudo-terminal
(CliRunner's output is never one, so these paths are otherwise untested)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from . import smtp_server
from .conftest import ROOT, SECRET, write_config

SAMPLE = ROOT / "subscribers" / "sample.csv"


def on_terminal(config: Path, *args: str) -> tuple[int, str]:
    """`newsletter --config CONFIG ARGS` with stdout and stderr on a pseudo-terminal: (exit code, what it showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(config), *args],
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=config.parent,
                            env={**os.environ, "NEWSLETTER_SECRET": SECRET, "TERM": "xterm", "COLUMNS": "100"})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other side closed: the process has ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=60), shown.decode("utf-8", "replace")


def test_import_and_send_show_their_progress_on_a_terminal_and_end_with_their_report(tmp_path):
    controller, inbox = smtp_server.start()
    try:
        config = write_config(tmp_path, backend="smtp", smtp_port=controller.port)
        code, shown = on_terminal(config, "subscribers", "import", str(SAMPLE), "--list", "weekly")
        assert code == 0, shown
        assert "importing" in shown and "rows read 12, added 12" in shown
        code, shown = on_terminal(config, "send", str(ROOT / "issues" / "2026-12-01.md"), "--list", "weekly", "--yes")
        assert code == 0, shown
        assert "sending 2026-12-01" in shown  # the progress bar's label
        assert "this run sent 12" in shown and "Traceback" not in shown
        assert inbox.count == 12
    finally:
        controller.stop()
