"""`--log-format json`: one JSON object per line (time, level, event, and the issue, list and counts
when there are any) for log collectors, from the command's own lines and from every logger.

Nothing in such a line names a person: addresses and the signed tokens of links are replaced before
it is written, whatever wrote it (a send's list of failures, an access log, a library's warning).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

# What a log collector may never hold: an address, and the tokens that act for a person.
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]*")  # half an address too: "name@"
_TOKEN_PATH = re.compile(r"/(confirm|unsubscribe|preferences)/[^/?#\s\"]+")
FIELDS = ("issue", "list", "counts")  # the structured fields a line may carry beside its event


def scrub(text: str) -> str:
    """`text` with every address and link token replaced."""
    return _TOKEN_PATH.sub(r"/\1/[token]", _ADDRESS.sub("[address]", text))


def line(level: str, event: str, **fields: Any) -> str:
    """One JSON log line: its time (UTC), level and event, and the fields that are set."""
    record: dict[str, Any] = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                              "level": level, "event": scrub(event)}
    record.update((name, value) for name, value in fields.items() if value not in (None, "", {}))
    return json.dumps(record, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines; what uvicorn's and the scheduler's loggers write, in that format."""

    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        if record.exc_info:
            event += "\n" + self.formatException(record.exc_info)
        fields = {name: getattr(record, name, None) for name in FIELDS}
        return line(record.levelname.lower(), event, logger=record.name, **fields)


def use_json() -> Callable[[], None]:
    """Every logger of this process writes JSON lines to stderr, for the length of the command; returns
    what puts the handlers back as they were (a test runs many commands in one process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # a library's warning is a JSON line too, not raw text on stderr

    def restore() -> None:
        logging.captureWarnings(False)
        root.handlers[:] = before
        root.setLevel(level)

    return restore


def uvicorn_config(config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging config with JSON lines from its loggers and from the app's own (`newsletter.web`)."""
    for formatter in config["formatters"].values():
        formatter.clear()
        formatter["()"] = f"{__name__}.JsonFormatter"
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config


def level_of(text: str, *, stderr: bool) -> str:
    """The level of a line the command prints: what its "error:" or "warning:" prefix says."""
    if not stderr:
        return "info"
    lowered = text.lstrip().lower()
    if lowered.startswith("warning"):
        return "warning"
    return "error" if lowered.startswith(("error", "unknown", "failed")) else "info"
