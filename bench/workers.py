"""Several `newsletter send` processes sharing one send on PostgreSQL, behind a slow fake SendGrid.

Needs a PostgreSQL server: `--server` (or $NEWSLETTER_TEST_POSTGRES), a SQLAlchemy URL without a
database name, e.g. postgresql+psycopg://postgres@/?host=/tmp&port=55432 (`.ci/run` starts one
for the tests). For each worker count, a fresh database gets `--size` subscribers, then that many
`newsletter send --yes` processes start together; the time is until the last one exits.

    python bench/workers.py [--size 200000] [--workers 1 2 4] [--latency 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, run_measured, write_config

KEY = "SG.bench-key"


def bench(server: str, size: int, workers: int, latency: float) -> None:
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_sendgrid.py"), "--key", KEY,
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{int(fake.stdout.readline())}"  # type: ignore[union-attr]
    name = f"newsletter_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server.replace("/?", "/postgres?"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder, api_base=url)
            config.write_text(config.read_text().replace('url = "sqlite:///bench.db"',
                                                         f'url = "{server.replace("/?", f"/{name}?")}"'))
            csv_path = folder / "readers.csv"
            csv_path.write_text("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(size)))
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "SENDGRID_API_KEY": KEY}
            run_measured(["--config", str(config), "subscribers", "import", str(csv_path), "--list", "weekly"], env)
            command = [sys.executable, "-m", "newsletter.cli", "--config", str(config), "send",
                       str(ROOT / "issues" / "2026-12-01.md"), "--list", "weekly", "--yes"]
            started = time.perf_counter()
            processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for _ in range(workers)]
            outputs = [p.communicate() for p in processes]
            seconds = time.perf_counter() - started
            if any(p.returncode for p in processes):
                raise SystemExit(f"a worker failed: {outputs}")
            with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
                got = json.loads(response.read())
            assert got["received"] == got["unique"] == size, got
            print(f"{size:,} recipients, {workers} worker(s), latency {latency * 1000:.0f} ms: {seconds:6.1f} s, "
                  f"{size / seconds:8,.0f} recipients/s", flush=True)
    finally:
        fake.kill()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default=os.environ.get("NEWSLETTER_TEST_POSTGRES", ""))
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--latency", type=float, default=0.25)
    args = parser.parse_args()
    if not args.server:
        raise SystemExit("give --server or set NEWSLETTER_TEST_POSTGRES to a PostgreSQL server URL")
    for workers in args.workers:
        bench(args.server, args.size, workers, args.latency)


if __name__ == "__main__":
    main()
