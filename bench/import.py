"""Import a generated CSV of 1,000,000 rows into a fresh store: seconds and peak RSS.

    python bench/import.py [--rows 1000000] [--floor]

With `--floor`, bench/import_floor.py then loads the same file into a store with the schema and no
subscribers: `csv.reader` and one `executemany` per table, the least an import must do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_measured, write_config


def generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,city,plan\n")
        for i in range(rows):
            handle.write(f"reader{i}@example{i % 97}.com,Reader {i},City {i % 500},{'pro' if i % 3 else 'free'}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--floor", action="store_true", help="then time bench/import_floor.py on the same file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder)
        csv_path = folder / "readers.csv"
        generate(csv_path, args.rows)
        seconds, peak, output, _cpu = run_measured(
            ["--config", str(config), "subscribers", "import", str(csv_path), "--list", "weekly"]
        )
        print(output.strip())
        print(f"imported {args.rows:,} rows in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s), "
              f"peak RSS {peak:.0f} MB")
        if args.floor:
            empty = folder / "floor"
            empty.mkdir()
            run_measured(["--config", str(write_config(empty)), "subscribers", "lists"])  # the schema and the list
            floor, _peak, _output, _cpu = run_measured([str(empty / "bench.db"), str(csv_path)],
                                                       program=(str(Path(__file__).parent / "import_floor.py"),))
            print(f"floor: {floor:.1f} s; the import is {seconds / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
