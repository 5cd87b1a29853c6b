"""Keep query strings out of the access log.

Search terms (pseudonyms) and diagnosis filters travel in query strings; an access log line is kept for
months by log rotation and shipped to places patient data must not go, so the server's access log
records the path only. Paths carry nothing but opaque ids.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DropQueryString(logging.Filter):
    """Rewrites uvicorn's access record ``(client, method, path?query, http_version, status)`` in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            path = args[2].split("?", 1)[0]
            record.args = (args[0], args[1], f"{path}?[query omitted]", args[3], args[4])
        return True


def install_access_log_filter() -> None:
    """Idempotent: app factories run several times in one process (tests, reloads)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, DropQueryString) for f in logger.filters):
        logger.addFilter(DropQueryString())
