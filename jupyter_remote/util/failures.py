"""Logging a background loop's failure: a traceback, except where the cause is plain."""

from __future__ import annotations

import errno
import logging
import sys

OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)  # the process (or host) has no descriptor left


def log_failure(logger: logging.Logger, what: str) -> None:
    """Call in an `except` block. Out of open files is one line (a loop that samples twice
    a second would otherwise print a traceback storm); anything else keeps its traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OSError) and exc.errno in OUT_OF_FILES:
        logger.warning("%s: out of open files (%s)", what, exc.strerror)
    else:
        logger.exception(what)
