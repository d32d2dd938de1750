"""Segments: part of a list chosen by a small filter language, compiled to SQL with bound values only.

In the spirit of Ghost's NQL: `tag:vip+attributes.country:[de,at]+subscribed_at:>2026-01-01`.
`+` is and, `,` is or (and binds tighter), `-` before a condition or a group negates it, and
parentheses group. A condition is `FIELD:VALUE`, `FIELD:>VALUE` (also `>=`, `<`, `<=`),
`FIELD:[A,B]` (any of) or `FIELD:~TEXT` (contains, ignoring the case of ASCII letters). Values
are words, "quoted text", numbers, dates (`2026-01-01`) and times relative to now (`-90d`,
`-12h`, `-2w`). The grammar is lark's; the tree is checked against `FIELDS`, the registry of what
may be asked and how, and compiled to a SQLAlchemy expression in which every value is a bound
parameter: there is no way to pass SQL through, and an unknown field, a wrong type or a syntax
error is one line with the position marked. A field without a value never matches.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from .errors import InputError
from .schema import SENT, deliveries, events, subscribers, tags
from .store import Store

MAX_LENGTH = 2_000  # characters of one expression
MAX_DEPTH = 20  # nested groups

GRAMMAR = r"""
?start: or_
?or_: and_ ("," and_)*
?and_: unary ("+" unary)*
?unary: NOT unary -> not_
      | "(" or_ ")"
      | condition
condition: FIELD ":" test
?test: OP value -> compare
     | "~" value -> contains
     | "[" value ("," value)* "]" -> any_of
     | value -> equals
?value: RELATIVE | DATE | NUMBER | STRING | WORD
NOT: "-"
OP: ">=" | "<=" | ">" | "<"
FIELD: /[a-z_]+(\.[A-Za-z0-9_-]{1,100})?/
RELATIVE: /-\d{1,6}[hdw]/
DATE: /\d{4}-\d{2}-\d{2}/
NUMBER: /\d{1,12}(?![\w.-])/
STRING: /"[^"\\\r\n]{0,500}"/
WORD: /[A-Za-z0-9_.@\u00C0-\u024F][A-Za-z0-9_.@\u00C0-\u024F-]{0,199}/
%ignore /[ \t]+/
"""


class SegmentError(InputError):
    """An expression that is not one: unknown field, wrong type, or bad syntax, with where it is."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # "=", ">", ">=", "<", "<=", "in", "~"
    values: tuple[str, ...]
    at: int  # the column where the condition starts (1-based)


@dataclass(frozen=True)
class Node:
    kind: str  # "and", "or", "not"
    parts: tuple[Node | Condition, ...]


Tree = Node | Condition


@dataclass(frozen=True)
class Field:
    kind: str  # "text", "tag", "time", "number", "flag"
    what: str


FIELDS: Mapping[str, Field] = MappingProxyType({
    "tag": Field("tag", "one of the subscriber's tags"),
    "email": Field("text", "the address"),
    "name": Field("text", "the name"),
    "attributes.KEY": Field("text", "an attribute from the import or the form"),
    "subscribed_at": Field("time", "when the subscriber was first stored"),
    "opened": Field("flag", "opened any issue (people, not privacy proxies)"),
    "clicked": Field("flag", "clicked a link in any issue"),
    "delivered": Field("flag", "had an issue delivered (the provider said so)"),
    "bounced": Field("flag", "had a bounce"),
    "last_open": Field("time", "their latest open"),
    "last_click": Field("time", "their latest click"),
    "sends_since_open": Field("number", "issues sent to them since their latest open (all, if none)"),
})
_OPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "tag": ("=", "in"), "text": ("=", "in", "~"), "time": (">", ">=", "<", "<="),
    "number": ("=", ">", ">=", "<", "<=", "in"), "flag": ("=",),
})
_FLAGS = MappingProxyType({"true": True, "yes": True, "false": False, "no": False})
_EVENT_FLAGS = MappingProxyType({"opened": "opened", "clicked": "clicked", "delivered": "delivered",
                                 "bounced": "bounced"})
_RELATIVE = re.compile(r"^-(\d+)([hdw])$")


def _parser() -> Any:
    """The lark parser (about 9 ms to build: made per parse, so nothing is kept by the process)."""
    from lark import Lark

    return Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def parse(text: str) -> Tree:
    """The tree of one expression; SegmentError for anything that is not one."""
    from lark import Token, Tree as LarkTree
    from lark.exceptions import UnexpectedInput

    if len(text) > MAX_LENGTH:
        raise SegmentError(f"segment: {len(text):,} characters; at most {MAX_LENGTH:,}")
    if text.count("(") > MAX_DEPTH:
        raise SegmentError(f"segment: more than {MAX_DEPTH} groups")
    try:
        parsed = _parser().parse(text)
    except UnexpectedInput as exc:
        column = getattr(exc, "column", 0) or 1
        raise SegmentError(f"segment: not understood at column {column}: {_mark(text, column)}") from None

    def build(node: Any) -> Tree:
        if isinstance(node, LarkTree) and node.data == "condition":
            name, test = node.children
            values = tuple(_text(v) for v in test.children if isinstance(v, Token) and v.type != "OP")
            op = {"compare": str(test.children[0]) if test.children else "=", "contains": "~", "any_of": "in",
                  "equals": "="}.get(str(test.data), "=") if isinstance(test, LarkTree) else "="
            if not isinstance(test, LarkTree):
                values = (_text(test),)
            return _checked(Condition(str(name), op, values, int(getattr(name, "column", 1) or 1)), text)
        kind = {"and_": "and", "or_": "or", "not_": "not"}[str(node.data)]
        parts = [c for c in node.children if not (isinstance(c, Token) and c.type == "NOT")]
        return Node(kind, tuple(build(p) for p in parts))

    return build(parsed)


def _text(token: Any) -> str:
    value = str(token)
    return value[1:-1] if value.startswith('"') else value


def _mark(text: str, column: int) -> str:
    """The expression with ▸ before the given column: where it went wrong, on one line."""
    index = max(0, min(len(text), column - 1))
    return f"{text[:index]}▸{text[index:]}"


def field_of(name: str) -> Field | None:
    return FIELDS.get("attributes.KEY" if name.startswith("attributes.") else name)


def _checked(condition: Condition, text: str) -> Condition:
    found = field_of(condition.field)
    where = f"at column {condition.at}: {_mark(text, condition.at)}"
    if found is None:
        known = ", ".join(FIELDS)
        raise SegmentError(f"segment: unknown field {condition.field!r} {where} (fields: {known})")
    if condition.op not in _OPS[found.kind]:
        raise SegmentError(f"segment: {condition.field} ({found.kind}) does not take {condition.op!r} {where}")
    for value in condition.values:
        _value(found, value, f"{condition.field} {where}")
    return condition


def _value(found: Field, value: str, where: str, now: dt.datetime | None = None) -> Any:
    """A value as its field's type; SegmentError when it is not one."""
    if found.kind == "time":
        relative = _RELATIVE.match(value)
        if relative:
            amount, unit = int(relative.group(1)), relative.group(2)
            delta = {"h": dt.timedelta(hours=amount), "d": dt.timedelta(days=amount),
                     "w": dt.timedelta(weeks=amount)}[unit]
            return (now or dt.datetime.now(dt.UTC).replace(tzinfo=None)) - delta
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            raise SegmentError(f"segment: {value!r} is not a date (YYYY-MM-DD) or a relative time (-90d): "
                               f"{where}") from None
    if found.kind == "number":
        if not value.isdigit():
            raise SegmentError(f"segment: {value!r} is not a number: {where}")
        return int(value)
    if found.kind == "flag":
        if value.lower() not in _FLAGS:
            raise SegmentError(f"segment: {value!r} is not true or false: {where}")
        return _FLAGS[value.lower()]
    return value.lower() if found.kind == "tag" else value


# -- to SQL --------------------------------------------------------------------------------------


def compile_tree(tree: Tree, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """The tree as a condition on `subscribers`, every value a bound parameter."""
    if isinstance(tree, Node):
        parts = [compile_tree(p, now) for p in tree.parts]
        if tree.kind == "not":
            return sa.not_(parts[0])
        return sa.and_(*parts) if tree.kind == "and" else sa.or_(*parts)
    found = field_of(tree.field)
    assert found is not None  # checked when parsed  # noqa: S101
    values = [_value(found, v, tree.field, now) for v in tree.values]
    return _SQL[found.kind](tree, values)


def _compare(column: Any, op: str, values: list[Any]) -> ColumnElement[bool]:
    """`column OP values`, false (never NULL) where the column has no value, so that `-` means "not"."""
    return sa.and_(column.is_not(None), _test(column, op, values))


def _test(column: Any, op: str, values: list[Any]) -> ColumnElement[bool]:
    if op == "in":
        return sa.or_(*(column == sa.bindparam(None, v) for v in values))
    if op == "~":
        escaped = str(values[0]).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        liked: ColumnElement[bool] = column.ilike(sa.bindparam(None, f"%{escaped}%"), escape="\\")
        return liked
    bound: Any = sa.bindparam(None, values[0])
    compared: ColumnElement[bool] = {"=": column == bound, ">": column > bound, ">=": column >= bound,
                                     "<": column < bound, "<=": column <= bound}[op]
    return compared


def _tag(condition: Condition, values: list[Any]) -> ColumnElement[bool]:
    return sa.exists().where(tags.c.subscriber_id == subscribers.c.id,
                             _compare(tags.c.tag, "in" if condition.op == "in" else "=", values))


def _text_field(condition: Condition, values: list[Any]) -> ColumnElement[bool]:
    if condition.field.startswith("attributes."):
        key = condition.field.partition(".")[2]
        column: Any = sa.type_coerce(sa.cast(subscribers.c.attributes, _AS_JSON), sa.JSON)[key].as_string()
    else:
        column = subscribers.c[condition.field]
    return _compare(column, condition.op, values)


# The attributes column is JSON text: PostgreSQL must be told it is JSON; SQLite must not (a CAST to
# JSON there is a numeric cast), so there it stays text and json_extract reads it.
_AS_JSON = sa.Text().with_variant(postgresql.JSON(), "postgresql")


def _human(kind: str, who: Any = subscribers.c.id) -> ColumnElement[bool]:
    """`who`'s events of `kind` made by people (an open a provider flags as a machine's is not one)."""
    return sa.and_(events.c.subscriber_id == who, events.c.kind == kind,
                   sa.or_(events.c.machine.is_(None), events.c.machine.is_(False)))


def _flag(condition: Condition, values: list[Any]) -> ColumnElement[bool]:
    had = sa.exists().where(_human(_EVENT_FLAGS[condition.field]))
    return had if values[0] else sa.not_(had)


def _time(condition: Condition, values: list[Any]) -> ColumnElement[bool]:
    if condition.field == "subscribed_at":
        return _compare(subscribers.c.created_at, condition.op, values)
    kind = "opened" if condition.field == "last_open" else "clicked"
    latest = sa.select(sa.func.max(events.c.occurred_at)).where(_human(kind)).scalar_subquery()
    return _compare(latest, condition.op, values)


def _number(condition: Condition, values: list[Any]) -> ColumnElement[bool]:
    last_open = (sa.select(sa.func.max(events.c.occurred_at)).where(_human("opened", deliveries.c.subscriber_id))
                 .scalar_subquery())
    since = (sa.select(sa.func.count()).select_from(deliveries)
             .where(deliveries.c.subscriber_id == subscribers.c.id, deliveries.c.state == SENT,
                    sa.or_(last_open.is_(None), deliveries.c.updated_at > last_open)).scalar_subquery())
    return _compare(since, condition.op, values)


_SQL: Mapping[str, Callable[[Condition, list[Any]], ColumnElement[bool]]] = MappingProxyType({
    "tag": _tag, "text": _text_field, "flag": _flag, "time": _time, "number": _number,
})


def where(text: str, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """`text` parsed, checked and compiled: a condition on `subscribers`."""
    return compile_tree(parse(text), now)


def describe(tree: Tree, depth: int = 0) -> list[str]:
    """The tree as indented lines, for `segment explain`."""
    pad = "  " * depth
    if isinstance(tree, Condition):
        return [f"{pad}{tree.field} {tree.op} {', '.join(tree.values)}"]
    return [f"{pad}{tree.kind}"] + [line for part in tree.parts for line in describe(part, depth + 1)]


def members(store: Store, list_name: str, text: str, now: dt.datetime | None = None) -> sa.Select[Any]:
    """The ids of the list's members who may be mailed and match `text`."""
    from .ledger import eligible

    return eligible(store.list_id(list_name)).where(where(text, now))


def matching_ids(store: Store, text: str) -> set[int]:
    """The ids of every subscriber who matches `text`, whatever their lists (for an export)."""
    condition = where(text)
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(subscribers.c.id).where(condition)).scalars())


def count(store: Store, list_name: str, text: str, now: dt.datetime | None = None) -> int:
    """How many of the list's members who may be mailed match `text`."""
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(
            members(store, list_name, text, now).subquery())).scalar() or 0)


def explain(store: Store, list_name: str, text: str) -> tuple[list[str], str, dict[str, Any], int]:
    """(the tree as lines, the SQL on this store's database, its parameters, the count) of one expression."""
    query = members(store, list_name, text)
    compiled = query.compile(dialect=store.engine.dialect)
    return describe(parse(text)), str(compiled), dict(compiled.params), count(store, list_name, text)
