"""What pixelift's warnings are, and how a caller collects the ones that describe a run.

A warning about the models an Enhancer runs (a provider passed over, a precision it could not
have) is a decision: :func:`decisions` collects those, so they travel with every result of that
Enhancer (a service's client shows them as an in-process run logs them). A warning about an event
of this process (a one-time build or measurement, a damaged file set aside) is logged with
``extra=EVENT`` and left out: it is not true of the runs that follow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "pixelift"
_EVENT_ATTR = "pixelift_event"
#: ``extra=`` of a warning about an event rather than a decision
EVENT = {_EVENT_ATTR: True}
#: how the notes of a result (``Result.notes``) that are information, not warnings, begin: a
#: command line shows them only with -v
INFO_NOTES = ("autopilot: ", "estimated noise sigma", "denoise skipped")


def is_warning(note: str) -> bool:
    return not note.startswith(INFO_NOTES)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # a service loads in several threads at once: each collects its own
        if record.thread == self.thread and not getattr(record, _EVENT_ATTR, False):
            message = record.getMessage()
            if message not in self.messages:
                self.messages.append(message)


@contextmanager
def decisions() -> Iterator[list[str]]:
    """The warnings this thread logs inside the block, events left out, each once, in order."""
    collector = _Collector()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)
