"""Typed provider options: each provider declares a frozen dataclass of what it accepts.

A provider's ``options_type`` is a subclass of :class:`ProviderOptions`. Its fields are the
options, with their defaults; ``choice`` and ``at_least`` record the allowed values in the
field metadata, where the checks here (and ``doctor``, and the tests) read them. A value of
the wrong type, outside its choices or below its minimum, and a name the provider does not
have, are a :class:`~pixelift.errors.ProviderOptionError` naming the option and the
provider's accepted ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pixelift.errors import ProviderOptionError


def choice(default: str, choices: Iterable[str]) -> Any:
    """A field whose value must be one of ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def at_least(default: int | None, minimum: int) -> Any:
    """An integer field (None allowed where the default is None) of at least ``minimum``."""
    return dataclasses.field(default=default, metadata={"minimum": minimum})


def _accepts(hint: Any, value: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(arm, value) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:  # bool is an int to isinstance, not to a user
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class ProviderOptions:
    """Base of every provider's options; validated when built."""

    #: the provider these options belong to, for messages
    provider: ClassVar[str] = "provider"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            where = f"{self.provider} option {f.name}={value!r}"
            if not _accepts(hints[f.name], value):
                raise ProviderOptionError(f"{where}: expected {_describe(hints[f.name])}")
            allowed = f.metadata.get("choices")
            if allowed is not None and value not in allowed:
                raise ProviderOptionError(f"{where}: choose from {', '.join(allowed)}")
            minimum = f.metadata.get("minimum")
            if minimum is not None and value is not None and value < minimum:
                raise ProviderOptionError(f"{where}: must be at least {minimum}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def changed(self) -> dict[str, Any]:
        """The options that differ from the provider's defaults (for reports)."""
        default = type(self)()
        return {n: getattr(self, n) for n in self.names() if getattr(self, n) != getattr(default, n)}


T = TypeVar("T", bound=ProviderOptions)


def parse(kind: type[T], options: Mapping[str, Any] | ProviderOptions | None = None, *, base: Any = None) -> T:
    """``kind`` from typed options (which must be ``kind``), from a mapping of option names
    (over ``base`` where ``base`` is a ``kind``, else over the defaults), or the defaults."""
    if isinstance(options, ProviderOptions):
        if not isinstance(options, kind):
            raise ProviderOptionError(
                f"{type(options).__name__} are {options.provider} options, not {kind.provider} ones ({kind.__name__})"
            )
        return options
    start = base if isinstance(base, kind) else kind()
    if options is None:
        return start
    if not isinstance(options, Mapping):
        raise ProviderOptionError(f"{kind.provider} options must be {kind.__name__} or a mapping, not {options!r}")
    unknown = sorted(set(options) - set(kind.names()))
    if unknown:
        accepted = ", ".join(kind.names()) or "none"
        raise ProviderOptionError(
            f"{kind.provider} has no option {', '.join(map(str, unknown))}; it accepts: {accepted}"
        )
    return dataclasses.replace(start, **options)
