"""Name -> constructor registries in timm's shape: ``@REG.register("name", **facts)``, ``REG.create(name, **kw)``,
``REG.names()``, ``REG.facts(name)``.

A registered entry may declare facts about itself (a loss its output activation, a model family its input
kind), so callers ask the registry what an entry is instead of comparing its name with a string literal.

An entry also declares the settings it accepts, as timm's ``OptimInfo`` does: by default the keyword parameters
of its signature (an entry written with ``**kwargs`` accepts anything), or ``accepts=(...)`` at registration.
``create`` refuses a keyword the entry does not accept, by name, instead of ignoring it; ``create_from`` is the
adapter from a config section's pool of settings: it passes each entry only the settings it accepts, and refuses
a setting no entry of the registry accepts (a misspelling).

The one registry implementation of the project (losses, optimizers, schedulers, model families, input kinds,
embedding models, data sources, tasks). Imports nothing of the project: every layer can keep a registry.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping, Optional


class RegistryError(KeyError):
    """An unknown name, a name registered twice, or a setting an entry does not accept; the message says which."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


def signature_accepts(fn: Callable[..., Any]) -> Optional[frozenset[str]]:
    """The keyword names ``fn`` (a function or a class) takes; None when it takes ``**kwargs`` (anything)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                         inspect.Parameter.KEYWORD_ONLY))


class Registry:
    """A named collection of constructors of one kind (losses, optimizers, model families, input kinds, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._accepts: dict[str, Optional[frozenset[str]]] = {}

    def register(self, name: str, accepts: Optional[Iterable[str]] = None, **facts: Any
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator adding ``fn`` under ``name``, with the ``facts`` it declares about itself and the keyword
        settings it ``accepts`` (default: its signature's)."""
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            self._facts[name] = dict(facts)
            self._accepts[name] = frozenset(accepts) if accepts is not None else signature_accepts(fn)
            return fn
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin replacing an entry, a test cleaning up after itself)."""
        for table in (self._entries, self._facts, self._accepts):
            table.pop(name, None)

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")

    def accepts(self, name: str) -> Optional[frozenset[str]]:
        """The keyword settings the entry ``name`` takes (None: any)."""
        self._check(name)
        return self._accepts[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the entry ``name`` with ``kwargs``; an unknown name lists the known ones, a keyword the entry does
        not accept is refused with its name and what the entry takes."""
        accepted = self.accepts(name)
        unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
        if unknown:
            raise RegistryError(f"{self.kind} {name!r} does not take {', '.join(unknown)}; it takes: "
                                f"{', '.join(sorted(accepted)) or 'nothing'}")
        return self._entries[name](**kwargs)

    def create_from(self, name: str, settings: Mapping[str, Any], **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs`` plus those of ``settings`` (a config section's pool, shared by every
        entry) that it accepts. A setting that no entry of this registry declares is refused by name (an entry
        written with ``**kwargs`` is given the whole pool)."""
        accepted = self.accepts(name)
        known = set().union(*(a for a in self._accepts.values() if a is not None))
        unknown = sorted(set(settings) - known)
        if unknown and accepted is not None:
            raise RegistryError(f"no {self.kind} takes {', '.join(unknown)}; the {self.kind} settings are: "
                                f"{', '.join(sorted(known))}")
        chosen = {k: v for k, v in settings.items() if accepted is None or k in accepted}
        return self.create(name, **chosen, **kwargs)

    def facts(self, name: str) -> dict[str, Any]:
        """What the entry ``name`` declared about itself when registered."""
        self._check(name)
        return dict(self._facts[name])

    def get(self, name: str) -> Callable[..., Any]:
        """The registered constructor itself (a class: ask it what it is)."""
        self._check(name)
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """Every registered name in the order of registration (the order ``auto`` asks recognisers in)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
