"""Send the sample issue to 100,000 and 1,000,000 subscribers through a fake SendGrid server.

The fake server runs in its own process on 127.0.0.1 and answers every request after
`--latency` seconds (0: loopback speed; 0.25: a real API's round trip for 1,000 recipients);
the store is a fresh SQLite file. Prints the whole command's time, recipients per second and
the sender's peak RSS for each size.

    python bench/send.py [--sizes 100000 1000000] [--latency 0.25] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, run_measured, write_config

KEY = "SG.bench-key"


def fake_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_sendgrid.py"), "--key", KEY,
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{port}"


def stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
        return json.loads(response.read())


def bench(size: int, latency: float, concurrency: int | None) -> None:
    server, url = fake_server(latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder, api_base=url)
            if concurrency:
                config.write_text(config.read_text() + f"[send]\nconcurrency = {concurrency}\n")
            csv_path = folder / "readers.csv"
            with csv_path.open("w") as handle:
                handle.write("email,name,city\n")
                for i in range(size):
                    handle.write(f"reader{i}@example{i % 97}.com,Reader {i},City {i % 500}\n")
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "SENDGRID_API_KEY": KEY}
            run_measured(["--config", str(config), "subscribers", "import", str(csv_path), "--list", "weekly"], env)
            issue = ROOT / "issues" / "2026-12-01.md"
            seconds, peak, output = run_measured(
                ["--config", str(config), "send", str(issue), "--list", "weekly", "--yes"], env)
            got = stats(url)
            assert got["received"] == got["unique"] == size, (got, output)
            print(f"{size:>9,} recipients, latency {latency * 1000:.0f} ms, concurrency {concurrency or 'default'}: "
                  f"{seconds:6.1f} s, {size / seconds:9,.0f} recipients/s, sender peak RSS {peak:.0f} MB, "
                  f"{got['requests']:,} requests", flush=True)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the fake server takes per request")
    parser.add_argument("--concurrency", type=int, help="[send] concurrency (default: the config's default)")
    args = parser.parse_args()
    for size in args.sizes:
        bench(size, args.latency, args.concurrency)


if __name__ == "__main__":
    main()
