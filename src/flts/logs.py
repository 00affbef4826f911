"""Structured JSON logs on stdlib logging: one JSON object per line on stderr.

Every record carries ``service``; context fields (``event``, ``correlation_id``,
``config_hash``, ``run_id``, ``model_type``, ``identifier``) are added with ``extra=`` and
appear only when known. Message and traceback go through :func:`flts.redaction.redact`, so a
backend URL quoted in an error never puts its password in a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from flts.redaction import redact

CONTEXT_FIELDS = ("event", "correlation_id", "config_hash", "run_id", "model_type", "identifier")


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
        return json.dumps(document, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger to one JSON stream on stderr (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that is not about our pipeline.
    for noisy in ("mlflow", "alembic", "urllib3", "cmdstanpy", "prophet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
