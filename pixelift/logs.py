"""What pixelift's warnings are, and how a caller collects the ones that describe a run.

A warning about the models an Enhancer runs (a provider passed over, a precision it could not
have) is a decision: :func:`decisions` collects those, so they travel with every result of that
Enhancer (a service's client shows them as an in-process run logs them). A warning about an event
of this process (a one-time build or measurement, a damaged file set aside) is logged with
``extra=EVENT`` and left out: it is not true of the runs that follow. :func:`events` hands those
on as they happen instead (a service shows them to the client waiting on that job).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOGGER = "pixelift"
_EVENT_ATTR = "pixelift_event"
#: ``extra=`` of a warning about an event rather than a decision
EVENT = {_EVENT_ATTR: True}
#: how the notes of a result (``Result.notes``) that are information, not warnings, begin: a
#: command line shows them only with -v
INFO_NOTES = ("autopilot: ", "estimated noise sigma", "denoise skipped", "more than 8 bits per sample")


def is_warning(note: str) -> bool:
    return not note.startswith(INFO_NOTES)


class _ThreadWarnings(logging.Handler):
    """This thread's warnings, events or the others, handed to ``sink`` (a service runs several
    jobs at once, one per thread: each hears its own)."""

    def __init__(self, sink: Callable[[str], None], *, events: bool) -> None:
        super().__init__(logging.WARNING)
        self.thread, self.sink, self.events = threading.get_ident(), sink, events

    def handle(self, record: logging.LogRecord) -> bool:
        # another thread's record never takes this handler's lock (the sink may wake a service's clients)
        return record.thread == self.thread and bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        if bool(getattr(record, _EVENT_ATTR, False)) is self.events:
            self.sink(record.getMessage())


@contextmanager
def _listening(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextmanager
def decisions() -> Iterator[list[str]]:
    """The warnings this thread logs inside the block, events left out, each once, in order."""
    said: list[str] = []
    with _listening(_ThreadWarnings(lambda m: None if m in said else said.append(m), events=False)):
        yield said


@contextmanager
def events(sink: Callable[[str], None]) -> Iterator[None]:
    """Each event (a warning logged with ``extra=EVENT``) this thread logs inside the block, to ``sink``."""
    with _listening(_ThreadWarnings(sink, events=True)):
        yield
