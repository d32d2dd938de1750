"""Count, and start a send for, a three-condition segment of a 1,000,000-subscriber list.

The list is imported from a generated CSV whose `tags` column tags one in ten `vip` and whose
`country` attribute is one of five; one in four people get an open event (engagement comes from
a provider's events, so they are written as such). Then, each measured as its own process:
`subscribers count --where 'tag:vip+attributes.country:de+opened:true'`, and `send --segment`
of the same expression with `--limit 1` through the fake SendGrid (the ledger fixes the audience
at the start; one batch goes). `--store` runs it on a PostgreSQL URL instead of a SQLite file.

    python bench/segments.py [--rows 1000000] [--store postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, run_measured, write_config

EXPRESSION = "tag:vip+attributes.country:de+opened:true"
COUNTRIES = ("de", "at", "fr", "it", "nl")


def generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,country,tags\n")
        for i in range(rows):
            tag = "vip" if i % 10 == 5 else ""
            handle.write(f"reader{i}@example{i % 97}.com,Reader {i},{COUNTRIES[i % 5]},{tag}\n")


def opens(url: str) -> None:
    """One in four people opened an issue, as a provider's webhook would have recorded it."""
    engine = sa.create_engine(url)
    at = dt.datetime(2026, 11, 24, 9, 0)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO events (event_key, kind, email, subscriber_id, occurred_at, received_at, machine) "
            "SELECT 'open-' || id, 'opened', email, id, :at, :at, :no FROM subscribers WHERE id % 4 = 0"),
            {"at": at, "no": False})
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--store", default="", help="a PostgreSQL URL (default: a SQLite file)")
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_sendgrid.py"), "--key", "SG.bench"],
                            stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{int(fake.stdout.readline())}"  # type: ignore[union-attr]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder, api_base=url)
            store = args.store or f"sqlite:///{folder / 'bench.db'}"
            config.write_text(config.read_text().replace('url = "sqlite:///bench.db"', f'url = "{store}"'))
            csv_path = folder / "readers.csv"
            generate(csv_path, args.rows)
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "SENDGRID_API_KEY": "SG.bench"}
            imported = run_measured(["--config", str(config), "subscribers", "import", str(csv_path), "--list",
                                     "weekly"], env)
            opens(store)
            counted = run_measured(["--config", str(config), "subscribers", "count", "--list", "weekly", "--where",
                                    EXPRESSION], env)
            started = run_measured(["--config", str(config), "send", str(ROOT / "issues" / "2026-12-01.md"),
                                    "--list", "weekly", "--segment", EXPRESSION, "--limit", "1", "--yes"], env,
                                   ok=(0, 3))
            kind = "PostgreSQL" if args.store else "SQLite"
            print(f"{kind}, {args.rows:,} subscribers (import {imported.seconds:.1f} s): count of "
                  f"'{EXPRESSION}' = {counted.stdout.strip()} in {counted.seconds:.2f} s, peak RSS "
                  f"{counted.peak_mb:.0f} MB; a send of it started (audience fixed, one batch sent) in "
                  f"{started.seconds:.2f} s, peak RSS {started.peak_mb:.0f} MB", flush=True)
    finally:
        fake.kill()
        fake.wait()


if __name__ == "__main__":
    main()
