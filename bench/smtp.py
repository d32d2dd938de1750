"""SMTP throughput with one connection and with the default pool, against a sink that answers slowly.

The sink is a real SMTP server (aiosmtpd) on 127.0.0.1 that waits `--delay` seconds before each
reply to MAIL, RCPT and DATA, as a relay a few milliseconds away does. Each run sends the sample
issue to `--size` subscribers with `newsletter send` in its own process, from a fresh store, and
prints the sender's CPU per message (start-up included).

    python bench/smtp.py [--size 2000] [--delay 0.005] [--connections 1 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, run_measured, write_config

from tests import smtp_server


def bench(size: int, delay: float, connections: int) -> None:
    controller, inbox = smtp_server.start()
    inbox.delay, inbox.keep = delay, False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder)
            config.write_text(config.read_text() + f'[provider]\nbackend = "smtp"\n[smtp]\nhost = "127.0.0.1"\n'
                              f'port = {controller.port}\nsecurity = "none"\nconnections = {connections}\n')
            csv_path = folder / "readers.csv"
            csv_path.write_text("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(size)))
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
            run_measured(["--config", str(config), "subscribers", "import", str(csv_path), "--list", "weekly"], env)
            issue = str(ROOT / "issues" / "2026-12-01.md")
            command = ["--config", str(config), "send", issue, "--list", "weekly", "--yes"]
            seconds, peak, output, cpu = run_measured(command, env)
            assert inbox.count == size, output
            print(f"{size:,} messages, {delay * 1000:.0f} ms per reply, {connections} connection(s): {seconds:5.1f} s, "
                  f"{size / seconds:6.0f} messages/s, sender CPU {cpu:.1f} s ({cpu / size * 1000:.2f} ms a message), "
                  f"peak RSS {peak:.0f} MB", flush=True)
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    for connections in args.connections:
        bench(args.size, args.delay, connections)


if __name__ == "__main__":
    main()
