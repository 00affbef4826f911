"""Structured JSON logs on stdlib logging: one JSON object per line on stderr.

Every record carries ``service``; context fields (``event``, ``correlation_id``,
``config_hash``, ``run_id``, ``model_type``, ``identifier``) are added with ``extra=`` and
appear only when known. Message and traceback go through :func:`flts.redaction.redact`, so a
backend URL quoted in an error never puts its password in a log line.

A process writes nothing else to stderr: uvicorn is started with :func:`uvicorn_log_config`
(its own loggers, access lines and tracebacks become JSON lines, in every worker process it
spawns), MLflow is told not to install its plain-text handler nor to print run URLs to
stdout, ``warnings`` are routed into
logging, and an uncaught exception (main thread or any other) becomes one JSON line whose
``error`` field holds the traceback.

This module imports only the standard library (and :mod:`flts.redaction`): the CLI configures
logging before every command, ``--help`` included, and must stay fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, TextIO

from flts.redaction import redact

CONTEXT_FIELDS = ("event", "correlation_id", "config_hash", "run_id", "model_type", "identifier")
#: Third-party chatter that is not about our pipeline.
NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "cmdstanpy", "prophet")


class LogLevel(StrEnum):
    """``--log-level`` / ``FLTS_LOG_LEVEL`` (case-insensitive on the command line)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["error"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time, not the stream of configure time:
    while a rich progress bar is live it redirects ``sys.stderr``, and a log line then goes
    above the bar instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """StreamHandler assigns the stream in ``__init__``; the live one is always used."""


def configure_logging(service: str, level: str | LogLevel = LogLevel.INFO) -> None:
    """Route every logger to one JSON stream on stderr (idempotent; the last call wins)."""
    # MLflow installs a plain-text handler on its loggers at import unless told not to, and
    # writes "View run ... at: URL" lines to stdout at the end of a run against a server
    # (stdout is where -o json puts its document).
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level_name(level))
    for noisy in NOISY_LOGGERS:
        logger = logging.getLogger(noisy)
        logger.setLevel(max(logging.WARNING, root.level))
        # Imported before this call, MLflow has its own handler already: route it here.
        logger.handlers[:] = []
        logger.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def uvicorn_log_config(
    service: str,
    level: str | LogLevel = LogLevel.INFO,
    *,
    uvicorn_level: str | LogLevel | None = None,
) -> dict[str, Any]:
    """A ``log_config`` for ``uvicorn.run``: its loggers (``uvicorn``, ``uvicorn.error``,
    ``uvicorn.access``) and the root logger write JSON lines through :class:`JsonFormatter`,
    the root at ``level``, uvicorn's own loggers at ``uvicorn_level`` (default: ``level``).

    uvicorn applies it with ``logging.config.dictConfig`` in the serving process and again
    in each worker process ``--workers N`` spawns (which inherit nothing else of ours), so it
    configures the root logger too rather than relying on :func:`configure_logging`.
    """
    name = _level_name(level)
    server = _level_name(uvicorn_level or level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "flts.logs.JsonFormatter", "service": service}},
        "handlers": {"stderr": {"class": "flts.logs.StderrHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": name},
        "loggers": {
            "uvicorn": {"handlers": [], "level": server, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": server, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": server, "propagate": True},
        },
    }


def _level_name(level: str | LogLevel) -> str:
    return (level.value if isinstance(level, LogLevel) else level).upper()


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("flts").critical(
        "uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, traceback)
    )


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("flts").critical(
        "uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        name,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )
