"""A warm ``pixelift serve`` for a bench's rounds, and a CLI run that must go through it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from pixelift.service import state


def in_process(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a CLI run that must not go through a service someone left running."""
    return {**(os.environ if env is None else env), state.ENV_SERVER: "off"}


@contextlib.contextmanager
def warm_service(tmp: Path) -> Iterator[dict[str, str]]:
    """A detached ``pixelift serve`` in its own folder for the rounds; the environment that finds it."""
    env = {**os.environ, state.ENV_SERVICE_DIR: str(tmp / "service"), state.ENV_SERVER: "auto"}
    cli = [sys.executable, "-m", "pixelift.cli", "serve"]
    subprocess.run([*cli, "--detach", "--idle-minutes", "0"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        yield env
    finally:
        subprocess.run([*cli, "--stop"], check=False, env=env, stdout=subprocess.DEVNULL)


def through_service(cmd: list[str], env: dict[str, str]) -> None:
    out = subprocess.run([*cmd, "--json"], check=True, env=env, capture_output=True, text=True).stdout
    if json.loads(out.splitlines()[-1]).get("via") != "service":  # fell back in-process: not what is measured
        raise SystemExit(f"the run did not go through the service: {out}")
