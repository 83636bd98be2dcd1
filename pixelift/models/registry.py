"""A transactional registry of :class:`ModelSpec`s."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator

from pixelift.errors import ModelNotFoundError
from pixelift.models.spec import ModelSpec


class Registry:
    def __init__(self, specs: Iterable[ModelSpec] = ()) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self.add(*specs)

    def add(self, *specs: ModelSpec, replace: bool = False) -> None:
        """Add all of ``specs`` or none of them."""
        seen: set[str] = set()
        for spec in specs:
            if spec.id in seen or (spec.id in self._specs and not replace):
                raise ValueError(f"model id {spec.id!r} is already registered")
            seen.add(spec.id)
        for spec in specs:
            self._specs[spec.id] = spec

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            close = difflib.get_close_matches(model_id, self._specs, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; run `pixelift models` for the list"
            raise ModelNotFoundError(f"unknown model {model_id!r}{hint}") from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def ids(self) -> list[str]:
        return list(self._specs)
