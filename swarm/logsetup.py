"""Where the processes' log lines go and how they read: text lines or one JSON object a line, on stderr."""
from __future__ import annotations

import datetime
import json
import logging

# pika logs each failed connection attempt as seven ERROR lines; the broker
# reports the failure itself, once, with the URL's password hidden.
PIKA_CONNECT_LOGGERS = (
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.base_connection",
)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO-8601 with the zone), ``level``, ``logger``, ``message``, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or (``fmt`` "json") one JSON object a line."""
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter(fmt))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("pika").setLevel(logging.WARNING)
    for name in PIKA_CONNECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def set_level(level: str) -> None:
    """A running process's log level (``swarm ctl reload``); ``ValueError`` for a level that is none."""
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"log.level {level!r} is not a level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    logging.getLogger().setLevel(value)


def set_format(fmt: str) -> None:
    """A running process's log format, ``text`` or ``json``, on the handlers ``setup_logging`` gave it."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_formatter(fmt))
