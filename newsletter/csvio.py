"""CSV import and export of subscribers.

Import streams the file in chunks, each one committed in its own transaction with set-based
statements, so memory stays flat and an interrupted import leaves the store as it was after the
last whole chunk; running it again reaches the same end state. Export writes the columns import
reads, with spreadsheet formulas neutralised.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from . import addresses, consent
from .consent import ACTIVE, UNCONFIRMED
from .errors import InputError
from .schema import history, memberships, subscribers, suppressions
from .store import Store, clean_text, db_time, executemany, kept_out_reason, merge, now, select_in

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 5000


def neutralise(cell: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula with an apostrophe (OWASP's advice)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def unneutralise(cell: str) -> str:
    """Undo `neutralise`, so that export followed by import gives back the same values."""
    if cell[:1] == "'" and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    updated: int = 0
    present: int = 0
    kept_out: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejects_path: Path | None = None
    reject_samples: list[tuple[int, str]] = field(default_factory=list)
    kept_out_samples: list[tuple[int, str]] = field(default_factory=list)  # (line, who and why)

    def summary(self) -> str:
        return (f"rows read {self.read}, added {self.added}, updated {self.updated}, already present "
                f"{self.present}, kept out {self.kept_out}, rejected {self.rejected}"
                + (f", duplicates merged {self.duplicates}" if self.duplicates else ""))


@dataclass
class _Row:
    line: int
    address: addresses.Address
    name: str
    attributes: dict[str, str]


def _check_utf8(path: Path) -> None:
    """Read the whole file through a strict decoder first, so a bad byte changes nothing."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line += block[: exc.start].count(b"\n")
                raise InputError(f"{path}:{line}: not UTF-8 text") from None
            line += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{path}:{line}: not UTF-8 text (truncated character at the end)") from None


def _records(path: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line, header, cells) per data row; the line is where the record starts."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: empty file; the first row must be a header with an 'email' column") from None
        except csv.Error as exc:
            raise InputError(f"{path}:1: {exc}") from None
        header = [h.strip().lower() if h.strip().lower() in ("email", "name") else h.strip() for h in header]
        if "email" not in header:
            raise InputError(f"{path}:1: no 'email' column in the header ({', '.join(header) or 'empty'})")
        if len(set(header)) != len(header):
            raise InputError(f"{path}:1: the header repeats a column name")
        start = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{path}:{start}: {exc}") from None
            if cells and any(c.strip() for c in cells):
                yield start, header, cells
            start = reader.line_num + 1


def _parse(header: list[str], cells: list[str]) -> _Row | str:
    """A clean row, or the reason it is rejected."""
    if len(cells) > len(header):
        return f"{len(cells)} fields but the header has {len(header)}"
    # A short row leaves the last columns empty.
    values = {h: (unneutralise(c) if c[:1] == "'" else c) for h, c in zip(header, cells, strict=False)}
    raw = values.pop("email", "").strip()
    if not raw:
        return "no email address"
    try:
        address = addresses.normalize(raw)
    except InputError as exc:
        return str(exc)
    name = clean_text(values.pop("name", ""))
    return _Row(0, address, name, {k: clean_text(v) for k, v in values.items() if k})


class _Rejects:
    def __init__(self, path: Path, header: list[str] | None = None) -> None:
        self.path, self.header = path, header
        self._handle: TextIO | None = None
        self._writer: Any = None

    def write(self, line: int, reason: str, header: list[str], cells: list[str]) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["line", "reason", *header])
        self._writer.writerow([line, neutralise(reason), *(neutralise(c) for c in cells)])

    def close(self) -> None:
        if self._handle:
            self._handle.close()


def import_csv(store: Store, path: str | Path, list_name: str, *, status: str = ACTIVE, strict: bool = False,
               rejects_path: str | Path | None = None, source: str = "", chunk_rows: int = CHUNK_ROWS,
               progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import a CSV into `list_name`; see the module docstring for the guarantees."""
    path = Path(path)
    source = source or f"import {path.name}"
    if status not in (ACTIVE, UNCONFIRMED):
        raise InputError(f"import status must be {ACTIVE} or {UNCONFIRMED}, not {status!r}")
    list_id = store.list_id(list_name)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    _check_utf8(path)
    if strict:
        for line, header, cells in _records(path):
            parsed = _parse(header, cells)
            if isinstance(parsed, str):
                raise InputError(f"{path}:{line}: {parsed} (--strict: nothing was imported)")
    report = ImportReport()
    rejects = _Rejects(Path(rejects_path) if rejects_path else path.with_name(path.stem + ".rejects.csv"))
    try:
        chunk: list[_Row] = []
        for line, header, cells in _records(path):
            report.read += 1
            parsed = _parse(header, cells)
            if isinstance(parsed, str):
                report.rejected += 1
                if len(report.reject_samples) < 10:
                    report.reject_samples.append((line, parsed))
                rejects.write(line, parsed, header, cells)
                continue
            parsed.line = line
            chunk.append(parsed)
            if len(chunk) >= chunk_rows:
                _import_chunk(store, list_id, chunk, status, source, report)
                chunk = []
                if progress:
                    progress(report.read)
        if chunk:
            _import_chunk(store, list_id, chunk, status, source, report)
        if progress:
            progress(report.read)
    finally:
        rejects.close()
    if report.rejected:
        report.rejects_path = rejects.path
    return report


def _import_chunk(store: Store, list_id: int, rows: list[_Row], status: str, source: str, report: ImportReport) -> None:
    merged: dict[str, _Row] = {}
    for row in rows:
        seen = merged.get(row.address.key)
        if seen is None:
            merged[row.address.key] = row
        else:
            report.duplicates += 1
            report.present += 1
            seen.name, seen.attributes = merge(seen.name, seen.attributes, row.name, row.attributes)
    keys = list(merged)
    with store.write() as conn:
        stamp = db_time(conn, now())
        hashes = {addresses.hash_key(k): k for k in keys}
        suppressed = {hashes[h] for (h,) in select_in(
            conn, "suppressed", lambda v: sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(v)),
            list(hashes))}
        existing = {r[1]: r for r in select_in(
            conn, "subscribers by key",
            lambda v: sa.select(subscribers.c.id, subscribers.c.email_key, subscribers.c.name, subscribers.c.attributes)
            .where(subscribers.c.email_key.in_(v)), keys)}
        ids: dict[str, int] = {k: r[0] for k, r in existing.items()}
        changed: set[str] = set()
        updates = []
        for key, (sid, _key, old_name, old_json) in existing.items():
            if key in suppressed:
                continue
            row = merged[key]
            old_attrs = json.loads(old_json)
            name, attrs = merge(old_name, old_attrs, row.name, row.attributes)
            if (name, attrs) != (old_name, old_attrs):
                changed.add(key)
                updates.append({"b_id": sid, "b_name": name, "b_attributes": json.dumps(attrs), "b_updated": stamp})
        executemany(
            conn,
            subscribers.update().where(subscribers.c.id == sa.bindparam("b_id")).values(
                name=sa.bindparam("b_name"), attributes=sa.bindparam("b_attributes"),
                updated_at=sa.bindparam("b_updated")),
            updates,
        )
        new = [merged[k] for k in keys if k not in existing and k not in suppressed]
        if new:
            executemany(conn, subscribers.insert(), [
                {"email": r.address.email, "email_key": r.address.key, "name": r.name,
                 "attributes": json.dumps(r.attributes) if r.attributes else "{}", "created_at": stamp,
                 "updated_at": stamp} for r in new
            ])
            ids.update(select_in(
                conn, "ids by key",
                lambda v: sa.select(subscribers.c.email_key, subscribers.c.id).where(subscribers.c.email_key.in_(v)),
                [r.address.key for r in new]))
        current = {sid: (state, left) for sid, state, left in select_in(
            conn, "memberships of ids",
            lambda v: sa.select(memberships.c.subscriber_id, memberships.c.status, memberships.c.left_at)
            .where(memberships.c.list_id == sa.bindparam("list_id"), memberships.c.subscriber_id.in_(v)),
            list(ids.values()), list_id=list_id)} if existing else {}
        to_insert: list[dict[str, Any]] = []
        to_update: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for key in keys:
            subscriber_id = ids.get(key)
            state, left = current.get(subscriber_id, (None, None)) if subscriber_id is not None else (None, None)
            left_at = _as_datetime(left)
            decision = consent.decide(consent.IMPORT, state, suppressed=key in suppressed, requested=status,
                                      left=left is not None)
            outcome = consent.outcome(decision, created=state is None and not decision.kept_out,
                                      details_changed=key in changed)
            if outcome == "kept out":
                report.kept_out += 1
                if len(report.kept_out_samples) < 10:
                    why = kept_out_reason(key in suppressed, left_at)
                    report.kept_out_samples.append((merged[key].line, f"{merged[key].address.email}: {why}"))
            elif outcome == "added":
                report.added += 1
            elif outcome == "updated":
                report.updated += 1
            else:
                report.present += 1
            if not decision.changed:
                continue
            changes.append({"subscriber_id": subscriber_id, "list_id": list_id, "from_status": state,
                            "to_status": decision.status, "source": source[:200], "reason": None, "at": stamp})
            if state is None:
                to_insert.append({"subscriber_id": subscriber_id, "list_id": list_id, "status": decision.status,
                                  "changed_at": stamp, "source": source[:100]})
            else:
                to_update.append({"b_id": subscriber_id, "b_status": decision.status})
        executemany(conn, memberships.insert(), to_insert)
        executemany(
            conn,
            memberships.update()
            .where(memberships.c.list_id == sa.bindparam("b_list"), memberships.c.subscriber_id == sa.bindparam("b_id"))
            .values(status=sa.bindparam("b_status"), changed_at=sa.bindparam("b_at"), source=sa.bindparam("b_source")),
            [{**row, "b_list": list_id, "b_at": stamp, "b_source": source[:100]} for row in to_update],
        )
        executemany(conn, history.insert(), changes)


def _as_datetime(value: Any) -> dt.datetime | None:
    """A DateTime read through a prepared statement: SQLite hands back its text form."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def export_csv(store: Store, list_name: str, out: TextIO, status: str | None = ACTIVE) -> int:
    """Write a list's members as CSV (email, name, one column per attribute); returns the row count."""
    keys: set[str] = set()
    for member in store.members(list_name, status):
        keys.update(member["attributes"])
    columns = sorted(keys - {"email", "name"})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", *columns])
    count = 0
    for member in store.members(list_name, status):
        attrs = member["attributes"]
        writer.writerow([neutralise(member["email"]), neutralise(member["name"]),
                         *(neutralise(attrs.get(c, "")) for c in columns)])
        count += 1
    return count
