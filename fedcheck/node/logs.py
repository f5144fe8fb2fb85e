"""JSON-lines logging for nodes and the coordinator.

Why: operators ship logs to a collector and correlate by round id. The formatter emits only the message and an
allow-list of ``extra`` fields (round ids, State codes, sizes, timings, reason codes); anything else passed in
``extra`` is dropped, so identities, keys and blinded elements cannot reach a log by accident.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["ALLOWED_FIELDS", "JsonFormatter", "configure_json_logging"]

#: ``extra`` keys that may appear in a log line.
ALLOWED_FIELDS = frozenset(
    {
        "round_id",
        "epoch_id",
        "partner",
        "state",
        "states",
        "mode",
        "status",
        "reason",
        "method",
        "ms",
        "items",
        "count",
        "index_size",
        "audiences",
        "address",
        "port",
        "records",
        "added",
        "updated",
        "removed",
        "rejected",
        "budget_remaining",
        "purpose",
        "targets",
        "replayed",
    }
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                doc[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc_type"] = record.exc_info[0].__name__
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_json_logging(
    level: int = logging.INFO, *, file: Path | None = None, stream: TextIO | None = None
) -> None:
    """Replace root handlers with one JSON-lines handler (stderr, or ``file`` when given)."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("grpc").setLevel(logging.WARNING)
