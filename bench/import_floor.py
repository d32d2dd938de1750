"""The floor of an import in Python: `csv.reader` and one `executemany` per table, nothing else.

Run by `bench/import.py --floor` on a store with the schema and no subscribers, as a whole process
like the import: each row becomes a subscriber, a membership and a line of consent history, with
no check of the address, no normalising, no duplicates and no error handling.

    python bench/import_floor.py STORE.db FILE.csv
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
import sys
from pathlib import Path


def main() -> None:
    store, path = sys.argv[1], sys.argv[2]
    at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(store)
    list_id = conn.execute("SELECT id FROM lists WHERE name = 'weekly'").fetchone()[0]
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        people = [(i, r[0], r[0].lower(), r[1], json.dumps(dict(zip(header[2:], r[2:], strict=True))), at, at)
                  for i, r in enumerate(rows, start=1)]
    conn.executemany("INSERT INTO subscribers (id, email, email_key, name, attributes, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", people)
    conn.executemany("INSERT INTO memberships (subscriber_id, list_id, status, changed_at, source) "
                     "VALUES (?, ?, 'active', ?, 'import')", [(p[0], list_id, at) for p in people])
    conn.executemany("INSERT INTO history (subscriber_id, list_id, from_status, to_status, source, at) "
                     "VALUES (?, ?, NULL, 'active', 'import', ?)", [(p[0], list_id, at) for p in people])
    conn.commit()
    print(len(people))


if __name__ == "__main__":
    main()
