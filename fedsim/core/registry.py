"""One registry helper for every name a config can give (datasets, models, strategies, attacks).

A registry maps names to objects and owns the one-line error for an unknown name, so each
registry answers "unknown X; choose one of ..." the same way. Import paths
(`package.module:Class`) are resolved with `pkgutil.resolve_name`.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from fedsim.core.errors import FedsimError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names to objects, with one clear error for a name that is not registered.

    Parameters
    ----------
    kind : str
        What the registry holds, for messages ("dataset", "model", "strategy", "attack").
    key : str
        The config key that names an entry (e.g. "data.dataset"), where an error points.
    load : callable, optional
        Called once, before the first read, to import the modules whose entries register
        themselves (`register`); registering never calls it, so those modules may import the
        registry without a cycle.
    """

    def __init__(self, kind: str, key: str, load: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        """The entries, after `load` has run (once; a read during it sees what is registered so far)."""
        if self._load is not None:
            load, self._load = self._load, None  # a read while loading must not load again
            try:
                load()
            except BaseException:
                self._load = load  # a failed import is raised again on the next read, not hidden behind a partial registry
                raise
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under `name` and returns it unchanged.

        A second, different entry under one name is a programming error (ValueError), so an
        entry cannot silently shadow another.
        """

        def add(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self._entries[name]!r} and {entry!r})")
            self._entries[name] = entry
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Register `entry` under `name` (replacing an earlier entry of that name)."""
        self._entries[name] = entry

    def __getitem__(self, name: str) -> T:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def choices(self) -> str:
        """The registered names, sorted and comma-separated (for messages and help texts)."""
        return ", ".join(sorted(self._loaded()))

    def get_or_fail(self, name: str, key: str | None = None, hint: str = "") -> T:
        """The entry registered as `name`.

        Parameters
        ----------
        name : str
            A registered name.
        key : str, optional
            Where the name came from, for the message (default: the registry's config key).
        hint : str
            Added to the message after the list of choices (e.g. "or 'package.module:Class'").

        Returns
        -------
        T
            The registered entry.

        Raises
        ------
        FedsimError
            When `name` is not registered: one line naming the key, the name and the choices.
        """
        if name not in self._loaded():
            raise FedsimError(f"{key or self.key}: unknown {self.kind} {name!r}; choose one of {self.choices()}{hint}")
        return self._entries[name]


def resolve_import(path: str, key: str) -> object:
    """The object an import path 'package.module:Name' names.

    Parameters
    ----------
    path : str
        'package.module:Name' (or 'package.module.Name'), as `pkgutil.resolve_name` reads it.
    key : str
        The config key that gave the path, for the message.

    Returns
    -------
    object
        The imported object.

    Raises
    ------
    FedsimError
        When the module cannot be imported or has no such attribute: one line with the cause.
    """
    module, _, attribute = path.partition(":")
    try:
        return pkgutil.resolve_name(path)
    except ImportError as exc:
        raise FedsimError(f"{key}: cannot import module {module!r} ({type(exc).__name__}: {exc}); check the import path and PYTHONPATH") from None
    except (AttributeError, ValueError) as exc:
        raise FedsimError(f"{key}: module {module!r} has no {attribute!r} ({type(exc).__name__}); check the class name") from None
    except Exception as exc:  # a user's module may fail at import in any way; say which
        raise FedsimError(f"{key}: importing {path!r} failed ({type(exc).__name__}: {exc})") from None
