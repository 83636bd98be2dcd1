"""How the runtime gets an artifact it lacks: through a builder, injected, never imported.

The runtime (torch-free) never imports :mod:`pixelift.export`. It calls
:func:`resolve_artifact` with a :class:`Builder`, or with none, in which case the builder
the installed export stage registered under the ``pixelift.builders`` entry-point group
is used, if that stage can load (it needs the ``export`` extra: torch and friends).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from typing import Protocol

from pixelift.artifacts.store import Artifact, inspect, locked
from pixelift.errors import ArtifactMissingError, DamagedArtifactError, MissingExtraError
from pixelift.logs import EVENT

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pixelift.builders"


class Builder(Protocol):
    def __call__(self, model_id: str, target: str, *, force: bool = False) -> Artifact:
        """Build (or return the cached) ``target`` artifact of ``model_id``."""
        ...


def installed_builder() -> Builder:
    """The export stage's builder; :class:`MissingExtraError` naming the extra when it cannot load."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    if not eps:
        raise MissingExtraError("no artifact builder is installed: pip install 'pixelift[export]'")
    try:  # the builder module loads without torch; building then failed deep inside, as an internal error
        has_torch = importlib.util.find_spec("torch") is not None
    except ValueError:  # in sys.modules as None: blocked, as good as absent
        has_torch = False
    if not has_torch:
        raise MissingExtraError("building artifacts needs the export extra (torch): pip install 'pixelift[export]'")
    ep = next(iter(eps))
    try:
        fn: Builder = ep.load()
    except ImportError as exc:
        raise MissingExtraError(
            f"building artifacts needs the export extra (missing module {exc.name or exc}): "
            "pip install 'pixelift[export]'"
        ) from None
    return fn


#: how the store's and the manifest's errors name their remedy, which the resolver words itself
REMEDY = "; run `pixelift export --force"


def _verified(model_id: str, target: str) -> tuple[Artifact | None, str | None]:
    """The artifact, or what is wrong with it: the damage only, since the remedy said here (rebuilt,
    or which command rebuilds it) depends on this install."""
    art, problem = inspect(model_id, target)
    if art is None:
        return None, problem and problem.split(REMEDY)[0]
    try:
        art.verify()
    except DamagedArtifactError as exc:
        return None, str(exc).split(REMEDY)[0]
    return art, None



def resolve_artifact(
    model_id: str, target: str, *, builder: Builder | None = None, auto_build: bool = True
) -> Artifact:
    """The verified artifact; a missing or damaged one is built (once across processes: a
    second process waits on the artifact's lock and reuses the first one's result)."""
    art, problem = _verified(model_id, target)
    if art is not None:
        return art
    if problem is not None:  # maybe a publish swapped files under us: read once more under the lock
        with locked(model_id, target):
            art, problem = _verified(model_id, target)
        if art is not None:
            return art
    what = f"{model_id}: the {target} artifact is damaged ({problem})" if problem else f"{model_id} has no {target} artifact yet"
    if not auto_build:
        raise ArtifactMissingError(f"{what}; run `pixelift export {'--force ' if problem else ''}{model_id}`")
    try:
        build = builder or installed_builder()
    except MissingExtraError as exc:
        raise ArtifactMissingError(
            f"{what}, and this install cannot build one ({exc}); or install an artifact bundle made elsewhere: "
            "`pixelift artifacts install FILE`"
        ) from None
    with locked(model_id, target):
        art, problem = _verified(model_id, target)  # built by another process while we waited?
        if art is not None:
            return art
        if problem:
            log.warning("%s: rebuilding the damaged %s artifact: %s", model_id, target, problem, extra=EVENT)
        else:
            log.warning(
                "%s: building the %s artifact now (one time; it is verified before use)", model_id, target, extra=EVENT
            )
        return build(model_id, target, force=problem is not None)


__all__ = ["ENTRY_POINT_GROUP", "Builder", "installed_builder", "resolve_artifact"]
