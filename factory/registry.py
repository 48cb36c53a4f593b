"""Name -> constructor registries in timm's shape: ``@REG.register("name")``, ``REG.create(name, **kw)``, ``REG.names()``."""
from __future__ import annotations

from typing import Any, Callable


class Registry:
    """A named collection of constructors of one kind (losses, optimizers, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator adding ``fn`` under ``name``."""
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn
        return add

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the entry ``name`` with ``kwargs``; an unknown name lists the known ones."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name](**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)
