"""Name → class registries for every kind of component, filled through registration hooks."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from stnkit.errors import RegistryError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its class and the plugin that registered it."""

    name: str
    cls: type[T]
    plugin: str
    distribution: str | None = None


class Registry(Generic[T]):
    """A mapping from component name to class, with clear errors for duplicates and unknowns.

    ``kind`` is the human word used in messages ("model", "data set", ...). Every registered class
    must carry ``name: ClassVar[str]`` and a pydantic ``Config`` class, a subclass of
    ``config_base`` when one is given (a kind's ``Config`` must be a ``HyperConfig``).
    """

    def __init__(
        self, kind: str, base: type[T] | None = None, config_base: type[BaseModel] | None = None
    ) -> None:
        self.kind = kind
        self.base = base
        self.config_base = config_base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, cls: type[T], plugin: str = "<direct>", distribution: str | None = None) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(
                f"{self.kind} class {cls.__qualname__} from plugin {plugin!r} has no `name` string"
            )
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise RegistryError(
                f"{self.kind} {name!r} from plugin {plugin!r} must subclass {self.base.__name__}"
            )
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise RegistryError(f"{self.kind} {name!r} from plugin {plugin!r} has no pydantic `Config` class")
        base = self.config_base
        if base is not None and not issubclass(config, base):
            # caught here: a kind's Config without init/tune/per_example validated recipes and
            # then crashed with an AttributeError traceback
            raise RegistryError(
                f"{self.kind} {name!r} from plugin {plugin!r}{_from(distribution)}: its `Config` "
                f"(based on {_bases(config)}) must subclass {base.__module__}.{base.__qualname__}, "
                "which holds the fields every declaration accepts"
            )
        existing = self._entries.get(name)
        if existing is not None and existing.cls is not cls:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by plugin {existing.plugin!r}"
                f"{_from(existing.distribution)} and by plugin {plugin!r}{_from(distribution)}"
            )
        self._entries[name] = Entry(name, cls, plugin, distribution)
        return cls

    def registrar(self, plugin: str, distribution: str | None = None) -> Callable[[type[T]], type[T]]:
        """A ``register(cls)`` callable that records ``plugin`` as the registrant."""

        def register(cls: type[T]) -> type[T]:
            return self.register(cls, plugin, distribution)

        return register

    def remove_plugin(self, plugin: str) -> list[str]:
        """Forget every component ``plugin`` registered (a plugin found broken); their names."""
        names = [name for name, entry in self._entries.items() if entry.plugin == plugin]
        for name in names:
            del self._entries[name]
        return names

    def get(self, name: str) -> type[T]:
        return self.entry(name).cls

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        if known:
            message += f" (known: {', '.join(known)})"
        else:
            message += f" (no {self.kind} is registered: is its plugin installed?)"
        return message

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[name] for name in sorted(self._entries)]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)!r})"


def _from(distribution: str | None) -> str:
    return f" (distribution {distribution!r})" if distribution else ""


def _bases(config: type) -> str:
    return ", ".join(b.__qualname__ for b in config.__mro__[1:] if b is not object) or "object"
