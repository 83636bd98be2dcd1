"""How ``enhance`` reports one file, in-process or through a service (light: the thin client imports it)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import click

from pixelift import logs

#: the exit code when at least one item failed (the others still ran); 2 is a usage error
EXIT_FAILED = 1
#: Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130
#: set, an internal error shows its traceback
ENV_DEBUG = "PIXELIFT_DEBUG"


def report(rec: dict[str, Any], src: Path, *, as_json: bool, quiet: bool) -> None:
    """One file's outcome: its JSON record, or its error, notes and result line (a run through a
    service, ``rec["via"]``, reports the same way)."""
    if as_json:
        click.echo(json.dumps(rec))
    elif rec["status"] == "error":
        click.echo(f"{src}: error: {rec['error']}", err=True)
    else:
        for note in rec.get("notes") or ():
            if logs.is_warning(note):
                click.echo(f"WARNING: {src.name}: {note}", err=True)
            elif logging.getLogger("pixelift").isEnabledFor(logging.INFO):  # -v here or before the command
                click.echo(f"INFO: {src.name}: {note}", err=True)
        if not quiet:
            via = ", via the service" if rec.get("via") == "service" else ""
            click.echo(f"{src} -> {rec['output']} ({rec['status']}, {rec['seconds']} s{via})")


class Warnings:
    """A run's warnings on stderr, each once: every file's record repeats what loading its models decided,
    in a process that did not log it here (a service, a Ray worker). ``logged``: what this process has
    logged itself (a live collection, :func:`pixelift.logs.decisions`), not said again."""

    def __init__(self, logged: Collection[str] = ()) -> None:
        self.logged = logged
        self.said: set[str] = set()

    def say(self, warnings: Iterable[str]) -> None:
        for warning in warnings:
            if warning not in self.said and warning not in self.logged:
                self.said.add(warning)
                click.echo(f"WARNING: {warning}", err=True)


class FileBars:
    """A tile progress bar per file on stderr, opened when the file's models start."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, src: Path) -> None:
        self.close()
        if self.enabled:
            self.bar = click.progressbar(length=1, label=src.name, file=sys.stderr)
            self.bar.__enter__()

    def advance(self, done: int, total: int) -> None:
        if self.bar is not None:
            _advance(self.bar, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _advance(bar: Any, done: int, total: int) -> None:
    bar.length = total
    bar.update(done - bar.pos)
