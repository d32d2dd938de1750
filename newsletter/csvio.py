"""CSV import and export of subscribers.

Import streams the file in chunks, each one committed in its own transaction with set-based
statements, so memory stays flat and an interrupted import leaves the store as it was after the
last whole chunk; running it again reaches the same end state. Export writes the columns import
reads, with spreadsheet formulas neutralised.
"""

from __future__ import annotations

import codecs
import copy
import csv
import datetime as dt
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import addresses, consent, fields
from .consent import ACTIVE, BOUNCED, COMPLAINED, UNCONFIRMED, UNSUBSCRIBED
from .errors import InputError, NewsletterError, StoreError
from .schema import history, memberships, subscribers, suppressions, tags
from .sql import analyze, db_time, executemany, insert_many, now, transient
from .store import SUPPRESSED, Store, kept_out_reason, left_at_after, merge

log = logging.getLogger(__name__)

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
DELIMITERS = (",", ";", "\t")
LEFT_ACTIONS: Mapping[str, str] = MappingProxyType({UNSUBSCRIBED: consent.UNSUBSCRIBE, BOUNCED: consent.BOUNCE,
                                COMPLAINED: consent.COMPLAINT})
EMAIL_HEADERS = ("email", "email address", "e-mail", "e-mail address")  # ours and listmonk's; Mailchimp's
MAX_RECORD_LINES = 20  # a record running over more lines is taken for an unclosed quote
MAX_FIELD_CHARS = 10_000
# A status column's values, ours and other tools', to what they mean here. Nothing that means
# "left" or "blocked" ever becomes active.
STATUS_VALUES = MappingProxyType({
    "active": ACTIVE, "subscribed": ACTIVE, "enabled": ACTIVE, "confirmed": ACTIVE,
    "unconfirmed": UNCONFIRMED, "pending": UNCONFIRMED,
    "unsubscribed": UNSUBSCRIBED, "disabled": UNSUBSCRIBED,
    "bounced": BOUNCED, "complained": COMPLAINED,
    "suppressed": SUPPRESSED, "blocklisted": SUPPRESSED, "blacklisted": SUPPRESSED, "cleaned": SUPPRESSED,
})
# What an export writes before the attributes; import reads them back (the times are for people).
EXPORT_COLUMNS = ("email", "name", "status", "subscribed_at", "status_changed_at", "source", "tags")
CHUNK_ROWS = 5000
CHUNK_TRIES = 3  # a chunk that meets another program's new rows of the same addresses runs again


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
    suppressed: int = 0  # addresses a status column put on the suppression list
    kept: int = 0  # rows in chunks already committed

    def counts(self) -> dict[str, int]:
        """What `summary` says, as numbers (a JSON log line's counts)."""
        counts = {"read": self.read, "added": self.added, "updated": self.updated, "present": self.present,
                  "kept_out": self.kept_out, "rejected": self.rejected}
        return counts | {name: n for name, n in (("suppressed", self.suppressed), ("duplicates", self.duplicates)) if n}

    def summary(self) -> str:
        return (f"rows read {self.read}, added {self.added}, updated {self.updated}, already present "
                f"{self.present}, kept out {self.kept_out}, rejected {self.rejected}"
                + (f", suppressed {self.suppressed}" if self.suppressed else "")
                + (f", duplicates merged {self.duplicates}" if self.duplicates else ""))


@dataclass
class _Row:
    line: int
    address: addresses.Address
    name: str
    attributes: dict[str, str]
    status: str | None = None  # from a status column; None: the import's --status
    tags: list[str] = field(default_factory=list)  # from a tags column (ours, listmonk's, Mailchimp's TAGS)


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


def _delimiter(path: Path) -> str:
    """The delimiter the header line uses most: comma, semicolon (European spreadsheets) or tab."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(path: Path, raw: list[str], email_column: str | None) -> list[str]:
    """The header as import reads it: the address column is "email"; columns to leave out are ""."""
    lowered = [h.strip().lower() for h in raw]
    wanted = email_column.strip().lower() if email_column else next((h for h in EMAIL_HEADERS if h in lowered), "")
    if not wanted or wanted not in lowered:
        named = f"no {email_column!r} column" if email_column else "no email column (email, Email Address, …)"
        raise InputError(f"{path}:1: {named} in the header ({', '.join(raw) or 'empty'}); "
                         f"name it with --email-column")
    dropped: set[str] = set()
    if {"uuid", "attributes"} <= set(lowered):  # a listmonk export
        dropped |= {"uuid", "created_at", "updated_at"}
    if {"status", "subscribed_at", "status_changed_at", "source"} <= set(lowered):  # an export of ours
        dropped |= {"subscribed_at", "status_changed_at", "source"}
    header = []
    for original, low in zip(raw, lowered, strict=True):
        if low == wanted:
            header.append("email")
        elif low in dropped:
            header.append("")
        elif low in ("name", "status", "first name", "last name", "tags") or (
                low == "attributes" and "uuid" in lowered):
            header.append(low)
        else:
            header.append(original.strip())
    return header


class _Lines:
    """A file's lines with their numbers, for csv.reader; lines can be put back to be read again."""

    def __init__(self, handle: TextIO) -> None:
        self._numbered = enumerate(handle, 1)
        self._back: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []  # the lines read since `taken` was last emptied

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        item = self._back.popleft() if self._back else next(self._numbered)
        self.taken.append(item)
        return item[1]

    def put_back(self, lines: list[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(lines))


def _records(path: Path, delimiter: str | None = None,
             email_column: str | None = None) -> Iterator[tuple[int, list[str], list[str], str]]:
    """(line, header, cells, problem) per data row; the line is where the record starts.

    `problem` is set for a record that runs over many lines or holds a huge field: most likely a
    quote that was never closed, which swallows the rows after it. That record is its first line
    alone, and the lines it swallowed are read again as rows of their own.
    """
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter or _delimiter(path))
        try:
            raw = next(reader)
        except StopIteration:
            raise InputError(f"{path}: empty file; the first row must be a header with an 'email' column") from None
        except csv.Error as exc:
            raise InputError(f"{path}:1: {exc}") from None
        header = _columns(path, raw, email_column)
        named = [h for h in header if h]
        if len(set(named)) != len(named):
            raise InputError(f"{path}:1: the header repeats a column name")
        while True:
            lines.taken = []
            problem = ""
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the reader starts afresh at the next line it is given
                problem = f"{exc}"
                cells = []
            taken = lines.taken
            start, spans = taken[0][0], taken[-1][0] - taken[0][0] + 1
            if problem or spans > MAX_RECORD_LINES or (cells and max(map(len, cells)) > MAX_FIELD_CHARS):
                longest = max(map(len, cells)) if cells else sum(len(text) for _n, text in taken)
                problem = (f"{problem or 'a field starting on this line'} (it runs {spans} lines and {longest:,} "
                           f"characters): probably a quote that is never closed; the rows after it are read on "
                           f"their own")
                lines.put_back(taken[1:])
                cells = taken[0][1].rstrip("\r\n").split(reader.dialect.delimiter)
            if problem or (cells and any(c.strip() for c in cells)):
                yield start, header, cells, problem


def _parse(header: list[str], cells: list[str], problem: str = "") -> _Row | str:
    """A clean row, or the reason it is rejected."""
    try:
        return _row(header, cells, problem)
    except InputError as exc:
        return str(exc)


def _row(header: list[str], cells: list[str], problem: str) -> _Row:
    if problem:
        raise InputError(problem)
    if len(cells) > len(header):
        raise InputError(f"{len(cells)} fields but the header has {len(header)}")
    if any("\x00" in c for c in cells):
        raise InputError("a field holds a NUL character")
    # A short row leaves the last columns empty.
    values = {h: (unneutralise(c) if c[:1] == "'" else c) for h, c in zip(header, cells, strict=False) if h}
    raw = values.pop("email", "").strip()
    if not raw:
        raise InputError("no email address")
    address = addresses.normalize(raw)
    first, last = values.pop("first name", ""), values.pop("last name", "")
    status = _status(values.pop("status", ""))
    tagged = fields.tags(values.pop("tags", "").strip().strip("[]").replace('"', ""))  # listmonk writes a list
    raw_attributes: dict[str, object] = {k: v for k, v in values.items() if k not in ("name", "attributes")}
    raw_attributes.update(_json_attributes(values.get("attributes", "")))
    name = fields.name(values.get("name", "") or f"{first.strip()} {last.strip()}")
    return _Row(0, address, name, fields.attributes(raw_attributes), status, tagged)


def _status(given: str) -> str | None:
    """A status column's value as a status here (None: the import's --status)."""
    given = given.strip().lower()
    if not given:
        return None
    if given not in STATUS_VALUES:
        raise InputError(f"unknown status {given!r} (known: {', '.join(sorted(STATUS_VALUES))})")
    return STATUS_VALUES[given]


def _json_attributes(text: str) -> dict[str, object]:
    """listmonk's attributes column: a JSON object; nested values are kept as their JSON."""
    if not text.strip():
        return {}
    try:
        extra = json.loads(text)
    except ValueError:
        raise InputError("the attributes column is not JSON") from None
    if not isinstance(extra, dict):
        raise InputError("the attributes column is not a JSON object")
    return {str(k): json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in extra.items()}


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
               progress: Callable[[int], None] | None = None, delimiter: str | None = None,
               email_column: str | None = None) -> ImportReport:
    """Import a CSV into `list_name`; see the module docstring for the guarantees.

    The delimiter (comma, semicolon or tab) is found from the header unless given; the address
    column is `email`, Mailchimp's `Email Address`, or `email_column`. A `status` column (ours,
    listmonk's or Mailchimp's values) sets each row's status instead of `status`.
    """
    path = Path(path)
    if status not in (ACTIVE, UNCONFIRMED):
        raise InputError(f"import status must be {ACTIVE} or {UNCONFIRMED}, not {status!r}")
    store.config.list(list_name)  # an unknown list is the first error
    _check_file(path, delimiter)
    if strict:
        _check_every_row(path, delimiter, email_column)
    list_id = store.list_id(list_name)  # only now: an import refused whole writes nothing, not even the list's row
    run = _Import(store, list_id, status, source or f"import {path.name}", chunk_rows, progress)
    rejects = _Rejects(Path(rejects_path) if rejects_path else path.with_name(path.stem + ".rejects.csv"))
    try:
        for line, header, cells, problem in _records(path, delimiter, email_column):
            run.take(line, header, cells, problem, rejects)
        run.flush()
    except (InputError, StoreError) as exc:
        raise run.stopped(exc) from None
    except sa.exc.DBAPIError as exc:
        if not transient(exc):
            raise
        raise run.stopped(store.unavailable(exc)) from None
    finally:
        rejects.close()
    if run.report.rejected:
        run.report.rejects_path = rejects.path
    return run.report


def _check_file(path: Path, delimiter: str | None) -> None:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    _check_utf8(path)
    if delimiter is not None and delimiter not in DELIMITERS:
        raise InputError(f"--delimiter must be one of: comma, semicolon, tab (got {delimiter!r})")


def _check_every_row(path: Path, delimiter: str | None, email_column: str | None) -> None:
    """--strict: the first bad row is the error, before anything is imported."""
    for line, header, cells, problem in _records(path, delimiter, email_column):
        parsed = _parse(header, cells, problem)
        if isinstance(parsed, str):
            raise InputError(f"{path}:{line}: {parsed} (--strict: nothing was imported)")


class _Import:
    """Rows read, rejected or gathered into chunks; each chunk imported in its own transaction."""

    def __init__(self, store: Store, list_id: int, status: str, source: str, chunk_rows: int,
                 progress: Callable[[int], None] | None) -> None:
        self.store, self.list_id, self.status, self.chunk_rows = store, list_id, status, chunk_rows
        self.progress = progress
        self.source = fields.clip(source, fields.SOURCE)
        self.report = ImportReport()
        self.chunk: list[_Row] = []
        self.chunks = 0

    def take(self, line: int, header: list[str], cells: list[str], problem: str, rejects: _Rejects) -> None:
        self.report.read += 1
        parsed = _parse(header, cells, problem)
        if isinstance(parsed, str):
            self.report.rejected += 1
            if len(self.report.reject_samples) < SAMPLES:
                self.report.reject_samples.append((line, parsed))
            rejects.write(line, parsed, header, cells)
            return
        parsed.line = line
        self.chunk.append(parsed)
        if len(self.chunk) >= self.chunk_rows:
            self._import_chunk()
            if self.progress:
                self.progress(self.report.read)

    def flush(self) -> None:
        if self.chunk:
            self._import_chunk()
        if self.chunks & (self.chunks - 1):  # not measured just now
            self.measured()
        if self.progress:
            self.progress(self.report.read)

    def _import_chunk(self) -> None:
        for attempt in range(1, CHUNK_TRIES + 1):
            report = copy.deepcopy(self.report)  # what the chunk counts, kept only when it commits
            try:
                with self.store.write() as conn:
                    _Chunk(conn, self.store, self.list_id, self.status, self.source, report).run(self.chunk)
            except sa.exc.IntegrityError:
                if attempt == CHUNK_TRIES:
                    raise
                # Another program stored one of these addresses (or memberships) meanwhile; run again,
                # the chunk finds it stored and decides from what it holds.
                log.info("another program stored some of this chunk's addresses meanwhile; importing it again")
                continue
            self.report = report
            break
        self.report.kept += len(self.chunk)
        self.chunk = []
        self.chunks += 1
        if self.chunks & (self.chunks - 1) == 0:  # after chunks 1, 2, 4, 8...: whenever the rows may have doubled
            self.measured()

    def measured(self) -> None:
        """The tables' statistics made current (PostgreSQL), so that what follows is planned for their size.
        Only an aid: the rows are committed already, so a failure is a warning, never a failed import."""
        try:
            analyze(self.store.engine, (subscribers, memberships, history))
        except sa.exc.DBAPIError as exc:
            log.warning("could not update the database's statistics after importing (%s); autovacuum will",
                        " ".join(str(exc.orig or exc).split())[:200])

    def stopped(self, error: NewsletterError) -> NewsletterError:
        """An import that stopped part-way: what went wrong, how many rows were kept, and how to go on."""
        kept = self.report.kept
        if not kept:
            return error
        where = f" before line {self.chunk[0].line:,}" if self.chunk else ""
        return type(error)(f"{error}; the {kept:,} rows{where} were imported (in chunks of {self.chunk_rows:,}): fix "
                           f"that and run the same import again, which updates the rows already imported instead of "
                           f"adding them twice")


SAMPLES = 10  # rejected and kept-out rows an import report names


class _Chunk:
    """One chunk of rows imported in one transaction, with set-based statements: suppressions a status
    column asks for, then people (added or their details merged), then memberships and history."""

    def __init__(self, conn: Connection, store: Store, list_id: int, status: str, source: str,
                 report: ImportReport) -> None:
        self.conn, self.store, self.list_id, self.status, self.source = conn, store, list_id, status, source
        self.report = report
        self.stamp = db_time(conn, now())
        self.changes: list[dict[str, Any]] = []  # history rows

    def run(self, rows: list[_Row]) -> None:
        merged = self._merge(rows)
        suppressed, newly = self._suppress(merged)
        ids, changed, known = self._people(merged, suppressed)
        self._memberships(merged, ids, known, suppressed, newly, changed)
        self._tags(merged, ids, suppressed)
        insert_many(self.conn, history, self.changes)

    def _merge(self, rows: list[_Row]) -> dict[str, _Row]:
        """One row per address; a repeated one merges into the first."""
        merged: dict[str, _Row] = {}
        for row in rows:
            seen = merged.get(row.address.key)
            if seen is None:
                merged[row.address.key] = row
            else:
                self.report.duplicates += 1
                self.report.present += 1
                seen.name, seen.attributes = merge(seen.name, seen.attributes, row.name, row.attributes)
                seen.status = row.status or seen.status
                seen.tags = seen.tags + [t for t in row.tags if t not in seen.tags]
        return merged

    def _tags(self, merged: dict[str, _Row], ids: dict[str, int], suppressed: set[str]) -> None:
        """The rows' tags added to what their people have (an import never takes a tag away), each
        addition a line of the person's history."""
        wanted = {ids[k]: row.tags for k, row in merged.items() if row.tags and k in ids and k not in suppressed}
        if not wanted:
            return
        have: dict[int, set[str]] = {}
        for sid, tag in self.store.select_in(
                self.conn, "tags of ids", lambda v: sa.select(tags.c.subscriber_id, tags.c.tag)
                .where(tags.c.subscriber_id.in_(v)), list(wanted)):
            have.setdefault(sid, set()).add(tag)
        added = {sid: [t for t in given if t not in have.get(sid, set())] for sid, given in wanted.items()}
        insert_many(self.conn, tags, [{"subscriber_id": sid, "tag": t, "tagged_at": self.stamp}
                                               for sid, new in added.items() for t in new])
        self.changes.extend({"subscriber_id": sid, "list_id": None, "from_status": None, "to_status": "tagged",
                             "source": fields.clip(self.source, fields.SOURCE),
                             "reason": fields.clip(", ".join(new), fields.REASON), "at": self.stamp}
                            for sid, new in added.items() if new)

    def _suppress(self, merged: dict[str, _Row]) -> tuple[set[str], list[str]]:
        """The chunk's suppressed addresses, and those its rows newly suppress: a status that says
        "suppressed" (ours, listmonk's blocklisted, Mailchimp's cleaned) puts the address on the
        suppression list, and from then on it is kept out like any suppressed address."""
        hashes = {addresses.hash_key(k): k for k in merged}
        suppressed = {hashes[h] for (h,) in self.store.select_in(
            self.conn, "suppressed",
            lambda v: sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(v)), list(hashes))}
        newly = [k for k, row in merged.items() if row.status == SUPPRESSED and k not in suppressed]
        insert_many(self.conn, suppressions, [
            {"email_hash": addresses.hash_key(k), "email_key": k, "source": self.source, "created_at": self.stamp,
             "reason": fields.clip(f"{self.source}: suppressed", fields.REASON)} for k in newly])
        self.report.suppressed += len(newly)
        return suppressed | set(newly), newly

    def _people(self, merged: dict[str, _Row], suppressed: set[str]) -> tuple[dict[str, int], set[str], list[int]]:
        """Subscriber ids by address, after adding the new people and merging the details of known ones
        (suppressed ones are left as they are); the addresses whose details changed; the known people's ids."""
        existing = {r[1]: r for r in self.store.select_in(
            self.conn, "subscribers by key",
            lambda v: sa.select(subscribers.c.id, subscribers.c.email_key, subscribers.c.name, subscribers.c.attributes)
            .where(subscribers.c.email_key.in_(v)), list(merged))}
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
                updates.append({"b_id": sid, "b_name": name, "b_attributes": json.dumps(attrs),
                                "b_updated": self.stamp})
        executemany(
            self.conn,
            subscribers.update().where(subscribers.c.id == sa.bindparam("b_id")).values(
                name=sa.bindparam("b_name"), attributes=sa.bindparam("b_attributes"),
                updated_at=sa.bindparam("b_updated")),
            updates,
        )
        new = [row for k, row in merged.items() if k not in existing and k not in suppressed]
        if new:
            insert_many(self.conn, subscribers, [
                {"email": r.address.email, "email_key": r.address.key, "name": r.name,
                 "attributes": json.dumps(r.attributes) if r.attributes else "{}", "created_at": self.stamp,
                 "updated_at": self.stamp} for r in new
            ])
            ids.update(self.store.select_in(
                self.conn, "ids by key",
                lambda v: sa.select(subscribers.c.email_key, subscribers.c.id).where(subscribers.c.email_key.in_(v)),
                [r.address.key for r in new]))
        return ids, changed, [r[0] for r in existing.values()]

    def _memberships(self, merged: dict[str, _Row], ids: dict[str, int], known: list[int], suppressed: set[str],
                     newly: list[str], changed: set[str]) -> None:
        """Each row's membership decided by the consent rules from its current state, counted, and written."""
        current = self._current(known)  # the people just added have no membership yet

        def now_of(key: str) -> tuple[str | None, Any]:
            subscriber_id = ids.get(key)
            return current.get(subscriber_id, (None, None)) if subscriber_id is not None else (None, None)

        def decide(key: str) -> consent.Decision:
            return self._decide(merged[key].status or self.status, *now_of(key), key in suppressed)

        decisions = {key: decide(key) for key in merged if key not in newly}
        # The memberships to change are locked and read again: a change another program made since
        # (an unsubscribe from the web) is what they are decided from. Those kept as they are stay unlocked.
        changing = {ids[k]: k for k, d in decisions.items() if d.changed and ids.get(k) in current}
        for locked, fresh in self._current(list(changing), lock=True).items():
            if fresh != current[locked]:
                current[locked] = fresh
                decisions[changing[locked]] = decide(changing[locked])
        to_insert: list[dict[str, Any]] = []
        to_update: list[dict[str, Any]] = []
        for key, row in merged.items():
            subscriber_id = ids.get(key)
            state, left = now_of(key)
            if key in newly:
                if subscriber_id is not None:
                    self._change(subscriber_id, None, None, SUPPRESSED)
                continue
            decision = decisions[key]
            self._count(decision, state, row, key in suppressed, key in changed, _as_datetime(left))
            if not decision.changed:
                continue
            self._change(subscriber_id, self.list_id, state, decision.status)
            left_after = left_at_after(str(decision.status), self.stamp, left)
            if state is None:
                to_insert.append({"subscriber_id": subscriber_id, "list_id": self.list_id, "status": decision.status,
                                  "changed_at": self.stamp, "source": self.source, "left_at": left_after})
            else:
                to_update.append({"b_id": subscriber_id, "b_status": decision.status, "b_left": left_after})
        insert_many(self.conn, memberships, to_insert)
        executemany(
            self.conn,
            memberships.update()
            .where(memberships.c.list_id == sa.bindparam("b_list"), memberships.c.subscriber_id == sa.bindparam("b_id"))
            .values(status=sa.bindparam("b_status"), changed_at=sa.bindparam("b_at"), source=sa.bindparam("b_source"),
                    left_at=sa.bindparam("b_left")),
            [{**row, "b_list": self.list_id, "b_at": self.stamp, "b_source": self.source} for row in to_update],
        )

    def _current(self, ids: list[int], *, lock: bool = False) -> dict[int, tuple[str | None, Any]]:
        """(status, left_at) of these people's memberships of the list; with `lock`, locked until the chunk
        commits (PostgreSQL's FOR UPDATE; SQLite's write transactions run one at a time)."""
        def query(values: list[sa.BindParameter[Any]]) -> sa.Select[Any]:
            select = sa.select(memberships.c.subscriber_id, memberships.c.status, memberships.c.left_at).where(
                memberships.c.list_id == sa.bindparam("list_id"), memberships.c.subscriber_id.in_(values))
            return select.with_for_update() if lock else select

        rows = self.store.select_in(self.conn, "memberships to change" if lock else "memberships of ids", query, ids,
                                    list_id=self.list_id) if ids else []
        return {sid: (state, left) for sid, state, left in rows}

    @staticmethod
    def _decide(wanted: str, state: str | None, left: Any, suppressed: bool) -> consent.Decision:
        if wanted in LEFT_ACTIONS:  # a row that left in the tool it comes from
            if state is None:
                return consent.Decision(wanted, True, False)
            return consent.decide(LEFT_ACTIONS[wanted], state)
        return consent.decide(consent.IMPORT, state, suppressed=suppressed, requested=wanted, left=left is not None)

    def _count(self, decision: consent.Decision, state: str | None, row: _Row, suppressed: bool, changed: bool,
               left_at: dt.datetime | None) -> None:
        report = self.report
        outcome = consent.outcome(decision, created=state is None and not decision.kept_out, details_changed=changed)
        if outcome == "kept out":
            report.kept_out += 1
            if len(report.kept_out_samples) < SAMPLES:
                why = kept_out_reason(suppressed, left_at)
                report.kept_out_samples.append((row.line, f"{row.address.email}: {why}"))
        elif outcome == "added":
            report.added += 1
        elif outcome == "updated":
            report.updated += 1
        else:
            report.present += 1

    def _change(self, subscriber_id: int | None, list_id: int | None, before: str | None, after: str | None) -> None:
        self.changes.append({"subscriber_id": subscriber_id, "list_id": list_id, "from_status": before,
                             "to_status": after, "source": self.source, "reason": None, "at": self.stamp})


def _as_datetime(value: Any) -> dt.datetime | None:
    """A DateTime read through a prepared statement: SQLite hands back its text form."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def export_csv(store: Store, list_name: str, out: TextIO, status: str | None = ACTIVE,
               only: set[int] | None = None) -> int:
    """Write a list's members as CSV; returns the row count.

    Columns: the EXPORT_COLUMNS, then one per attribute. Importing the file into another store
    restores who is on the list with which status, suppressed addresses included. Every cell,
    the header's included, is neutralised against spreadsheet formulas. `only`: these subscriber
    ids (a segment's) and nobody else.
    """
    keys: set[str] = set()
    for member in store.members(list_name, status):
        if only is None or member["id"] in only:
            keys.update(member["attributes"])
    columns = sorted(keys - set(EXPORT_COLUMNS))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([neutralise(c) for c in (*EXPORT_COLUMNS, *columns)])
    count = 0
    for member in store.members(list_name, status):
        if only is not None and member["id"] not in only:
            continue
        attrs = member["attributes"]
        fixed = [member["email"], member["name"], member["status"], _stamp(member["subscribed_at"]),
                 _stamp(member["status_changed_at"]), member["source"], ",".join(member["tags"])]
        writer.writerow([neutralise(str(v)) for v in (*fixed, *(attrs.get(c, "") for c in columns))])
        count += 1
    return count


def export_suppressions(store: Store, out: TextIO) -> int:
    """Write the suppression list as CSV (email, email_sha256, reason, source, suppressed_at)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "email_sha256", "reason", "source", "suppressed_at"])
    count = 0
    for row in store.suppression_list():
        writer.writerow([neutralise(str(row[k])) for k in ("email", "email_sha256", "reason", "source")]
                        + [_stamp(row["suppressed_at"])])
        count += 1
    return count


def export_problems(problems: list[tuple[str, str, str, int]], out: TextIO) -> int:
    """Write a send's failed and unknown rows as CSV (email, state, error, attempts)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "state", "error", "attempts"])
    for email, state, error, attempts in problems:
        writer.writerow([neutralise(email), state, neutralise(error), attempts])
    return len(problems)


def _stamp(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}" if value else ""
