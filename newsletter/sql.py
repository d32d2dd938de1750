"""The database underneath: the engine (SQLite's settings in one place) and bulk SQL that skips
SQLAlchemy's per-row work while keeping every value a bound parameter."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.sql.compiler import SQLCompiler

from .errors import StoreError


def now() -> dt.datetime:
    """UTC now, naive, as every timestamp in the store."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _sqlite_setup(engine: Engine) -> None:
    """SQLite only: WAL, a busy timeout, and BEGIN IMMEDIATE for `Store.write()` transactions."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front (no deadlock upgrading a read); readers do not block.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def make_engine(url: str) -> Engine:
    try:
        # A pooled connection is checked before use, so one a server restart or a proxy closed is
        # replaced instead of failing the next statement (a SQLite file has no connection to lose).
        # psycopg 3 prepares a statement run five times, and PostgreSQL may then keep one plan for it
        # made when a table was nearly empty: an import's address lookup compared every row with every
        # address of a block, slower with each block. Every statement is planned for the tables as they are.
        options: dict[str, Any] = {}
        if sa.engine.make_url(url).get_driver_name() == "psycopg":
            options["connect_args"] = {"prepare_threshold": None}
        engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"), **options)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"store url {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        _sqlite_setup(engine)
    return engine


def analyze(engine: Engine, tables: tuple[sa.Table, ...]) -> None:
    """Bring PostgreSQL's statistics of these tables up to date after they grew fast (an import). Planned
    from near-empty statistics, an import's address lookups scan whole tables, and so does the next
    send's snapshot, which took minutes for 50,000 rows imported just before; autovacuum measures
    them only in its own time. SQLite needs nothing: it finds rows by index whatever it knows."""
    if engine.dialect.name == "postgresql":  # in autocommit: no transaction is left open around it
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE " + ", ".join(engine.dialect.identifier_preparer.format_table(t)
                                                         for t in tables))


class Prepared:
    """A Core statement compiled once for a dialect and run straight through the driver.

    SQLAlchemy's per-row parameter and result processing costs more than the database does in
    bulk imports and sends. Values are still bound parameters, never SQL text built from values;
    they must be what the driver takes: str, int, None, or `db_time()`.
    """

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect, column_keys: list[str] | None = None) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=column_keys))
        self.sql = str(compiled)
        self._order = compiled.positiontup
        self._fixed = dict(compiled.params)  # literals written in the statement

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self._fixed, **values} if self._fixed else values
        return tuple(merged[n] for n in self._order) if self._order else merged

    def execute(self, conn: Connection, values: dict[str, Any]) -> list[Any]:
        """Run once and return the rows as plain tuples."""
        result = conn.exec_driver_sql(self.sql, self.params(values))
        if not result.returns_rows:
            return []
        try:
            return list(result.cursor.fetchall())  # the driver's tuples: no Row made for each
        except conn.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(self.sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                             dialect=conn.dialect) from exc
        finally:
            result.close()


IN_BLOCK = 500


class InQueries:
    """Queries over many values, each compiled once per store (see `run`)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str], Prepared] = {}
        self._names = [f"in_{i}" for i in range(IN_BLOCK)]

    def run(self, conn: Connection, name: str, build: Callable[[list[sa.BindParameter[Any]]], sa.Select[Any]],
            values: list[Any], **fixed: Any) -> list[Any]:
        """Rows of the query `build(IN list)` for many values, in blocks of IN_BLOCK bound values.

        The query (named `name`) is compiled once: the last block is padded by repeating a value,
        which changes nothing in an IN list. SQLAlchemy's "expanding" parameters would rebuild the
        statement for every call, one parameter name per value.
        """
        key = (name, conn.dialect.name)
        prepared = self._compiled.get(key)
        if prepared is None:
            prepared = self._compiled[key] = Prepared(build([sa.bindparam(n) for n in self._names]), conn.dialect)
        rows: list[Any] = []
        for start in range(0, len(values), IN_BLOCK):
            block = values[start:start + IN_BLOCK]
            block += [block[0]] * (IN_BLOCK - len(block))
            rows.extend(prepared.execute(conn, {**fixed, **dict(zip(self._names, block, strict=True))}))
        return rows


def insert_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows into `table`, each a dict of the same columns: on PostgreSQL (through psycopg 3)
    as COPY, which the server takes in bulk (an import's rows in a third less time than one INSERT
    each), elsewhere through the driver's executemany."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":  # psycopg 3's COPY interface
        _copy(conn, table.name, list(rows[0]), rows)
    else:
        executemany(conn, table.insert(), rows)


def insert_new(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert one row unless its key is taken (ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike):
    True when it was inserted. Two transactions inserting the same key at once never fail."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    # RETURNING, not rowcount: SQLAlchemy does not keep an INSERT's rowcount for psycopg (it reads -1).
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
    return conn.execute(statement).first() is not None


def executemany(conn: Connection, statement: sa.ClauseElement, rows: list[dict[str, Any]]) -> None:
    """Run a Core statement for many rows through the driver's executemany (see `Prepared`)."""
    if not rows:
        return
    prepared = Prepared(statement, conn.dialect, list(rows[0]) if isinstance(statement, sa.Insert) else None)
    literals = {k: v for k, v in prepared._fixed.items() if k not in rows[0]}
    if literals:
        rows = [{**literals, **row} for row in rows]
    if prepared._order:
        pick = operator.itemgetter(*prepared._order)
        params: list[Any] = [pick(row) if len(prepared._order) > 1 else (pick(row),) for row in rows]
    else:
        params = rows
    conn.exec_driver_sql(prepared.sql, params)


def _copy(conn: Connection, table: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """COPY rows into a table (PostgreSQL, psycopg 3), inside the connection's transaction; the driver's
    errors come out as SQLAlchemy's, as every other statement's do."""
    dbapi = conn.connection.dbapi_connection
    names = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)
    sql = f"COPY {conn.dialect.identifier_preparer.quote(table)} ({names}) FROM STDIN"
    try:
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row([row[c] for c in columns])
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc


def transient(exc: BaseException) -> TypeGuard[sa.exc.DBAPIError]:
    """A database error that may pass: a lost or refused connection, a restart, a full disk, a long lock."""
    return isinstance(exc, sa.exc.OperationalError) or (
        isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated))


def new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT just made."""
    key = result.inserted_primary_key
    if key is None:
        raise StoreError("the database did not report the new row's id")
    return int(key[0])


def time_binder(dialect: sa.Dialect) -> Callable[[dt.datetime], Any]:
    """What turns a datetime into the value the dialect stores for a DateTime (looking it up costs
    more than using it: a send keeps the one it got)."""
    processor = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    return cast(Callable[[dt.datetime], Any], processor) if processor else _same


def _same(value: dt.datetime) -> Any:
    return value


def db_time(conn: Connection, value: dt.datetime) -> Any:
    """`value` as the dialect stores a DateTime, for use with `executemany`."""
    return time_binder(conn.dialect)(value)
