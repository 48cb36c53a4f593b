"""Name -> constructor registries in timm's shape: ``@REG.register("name", **facts)``, ``REG.create(name, **kw)``,
``REG.names()``, ``REG.facts(name)``.

A registered entry may declare facts about itself (a loss its output activation, a model family its input
kind), so callers ask the registry what an entry is instead of comparing its name with a string literal.
Imports nothing of the project: every layer can keep a registry.
"""
from __future__ import annotations

from typing import Any, Callable


class Registry:
    """A named collection of constructors of one kind (losses, optimizers, model families, input kinds, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._facts: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **facts: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator adding ``fn`` under ``name``, with the ``facts`` it declares about itself."""
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            self._facts[name] = dict(facts)
            return fn
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin replacing an entry, a test cleaning up after itself)."""
        self._entries.pop(name, None)
        self._facts.pop(name, None)

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the entry ``name`` with ``kwargs``; an unknown name lists the known ones."""
        self._check(name)
        return self._entries[name](**kwargs)

    def facts(self, name: str) -> dict[str, Any]:
        """What the entry ``name`` declared about itself when registered."""
        self._check(name)
        return dict(self._facts[name])

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
