"""Component registries: decorator registration plus lazy entry-point discovery.

Every pluggable kind (backbones, losses, miners, ...) has one :class:`Registry`. Built-in
components live in ``builtin_modules`` that the registry imports on first use, so a lookup
never depends on which petkit module happened to be imported first. Third-party packages
declare entry points in the group ``petkit.<kind>``; each entry point names either a
module (imported for its ``@REGISTRY.register`` side effects) or a callable (registered
under the entry point's name). A plugin that fails to load becomes a warning naming it, and
so does one that reuses a name already taken (the warning names both packages; the first keeps
the name). What a factory returns is checked against the registry's interface
(petkit.interfaces), so a plugin that returns the wrong thing fails with one line.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from petkit.errors import PetkitError
from petkit.limits import check_args


class PluginWarning(UserWarning):
    """A third-party plugin could not be loaded; petkit carries on without it."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Callable[..., Any]
    source: str  # distribution that provides it ("petkit" for built-ins)
    summary: str


class Registry:
    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = (), noun: str | None = None):
        self.kind = kind
        self.noun = noun or kind.rstrip("s")  # "unknown loss 'x'" reads better than "losses"
        self.group = f"petkit.{kind}"
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading_source: str | None = None

    # registration -------------------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator: ``@LOSSES.register("triplet")`` (default name: the object's ``__name__``)."""

        def decorator(obj: Callable) -> Callable:
            self.add(name or obj.__name__, obj)
            return obj

        return decorator

    def add(self, name: str, obj: Callable, source: str | None = None) -> None:
        if name in self._entries:
            existing = self._entries[name]
            raise PetkitError(
                f"{self.noun} '{name}' is registered twice "
                f"(by {existing.source} and by {source or self._current_source(obj)})",
                "rename one of them; names must be unique within a registry",
            )
        doc = (obj.__doc__ or "").strip().splitlines()
        self._entries[name] = Entry(name, obj, source or self._current_source(obj), doc[0] if doc else "")

    def _current_source(self, obj: Callable) -> str:
        if self._loading_source:
            return self._loading_source
        module = getattr(obj, "__module__", "") or ""
        return "petkit" if module.split(".")[0] == "petkit" else module.split(".")[0] or "?"

    # discovery ------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: built-in modules re-enter the registry while importing
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in metadata.entry_points(group=self.group):
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        self._loading_source = dist
        try:
            loaded = ep.load()
            if callable(loaded) and ":" in ep.value:
                if ep.name in self._entries:
                    taken = self._entries[ep.name]
                    if taken.obj is loaded:  # the same distribution seen twice (editable installs list it twice)
                        return
                    raise PetkitError(f"the name is taken by {taken.source}")
                self.add(ep.name, loaded, source=dist)
        except Exception as exc:  # a broken plugin must never take the CLI down
            warnings.warn(
                f"petkit plugin '{ep.name}' from '{dist}' (group {self.group}) failed to load "
                f"and is skipped: {exc if isinstance(exc, PetkitError) else f'{type(exc).__name__}: {exc}'}",
                PluginWarning,
                stacklevel=2,
            )
        finally:
            self._loading_source = None

    # lookup ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._ensure_loaded()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        self._ensure_loaded()
        if name not in self._entries:
            raise PetkitError(self.unknown_message(name), f"run 'petkit plugins list --kind {self.kind}' to see them with their packages")
        return self._entries[name].obj

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        message = f"unknown {self.noun} '{name}'; available: {', '.join(known) or '(none)'}"
        return message + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "")

    def build(self, spec: Any, **context: Any) -> Any:
        """Build a component from a ``{name, args}`` spec (dict or :class:`petkit.config.Component`).

        ``context`` holds call-site facts (``num_classes``, ``embedding_dim``, ``miner``, ...);
        each is passed only to factories whose signature accepts it, so a component declares
        what it needs simply by naming it.
        """
        name, factory, args = self._checked(spec)
        clash = sorted(set(args) & set(context))
        if clash:
            raise PetkitError(
                f"{self.noun} '{name}': {', '.join(clash)} is set by petkit and cannot be given in args",
                "remove it from the component's args",
            )
        kwargs = {**_accepted(factory, context), **args}
        self._bind(name, factory, args, kwargs, partial=False)
        return self.check(factory(**kwargs), name)

    def validate(self, spec: Any) -> None:
        """Check a spec's name, argument names and declared ranges without building it (before any data is read)."""
        self._checked(spec)

    def _checked(self, spec: Any) -> tuple[str, Callable[..., Any], dict[str, Any]]:
        """(name, factory, args) of a spec whose name is registered, whose args the factory takes (the facts
        petkit adds come later) and whose values are within their declared ranges (petkit.limits)."""
        name, args = (spec["name"], spec.get("args")) if isinstance(spec, dict) else (spec.name, spec.args)
        factory = self.get(name)
        args = dict(args or {})
        self._bind(name, factory, args, args, partial=True)
        check_args(factory, args, lambda arg: f"{self.noun} '{name}': {arg}")
        return name, factory, args

    def _bind(self, name: str, factory: Callable[..., Any], args: dict, kwargs: dict, partial: bool) -> None:
        try:
            signature = inspect.signature(factory)
            (signature.bind_partial if partial else signature.bind)(**kwargs)
        except TypeError as exc:
            raise PetkitError(
                f"{self.noun} '{name}' rejected its arguments {sorted(args)}: {exc}",
                f"check the 'args' of this {self.noun} in your config",
            ) from exc
        except ValueError:  # no signature to check (a builtin): let the call speak
            pass

    def check(self, obj: Any, name: str) -> Any:
        """``obj`` if it meets this registry's interface, else one clear error naming the component."""
        from petkit.interfaces import INTERFACES

        interface = INTERFACES.get(self.kind)
        if interface is None:
            return obj
        source = self._entries[name].source if name in self._entries else "?"
        where = f"{self.noun} '{name}'" + (f" (from {source})" if source != "petkit" else "")
        return interface.check(obj, where)


def _accepted(factory: Callable, context: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(context)
    return {k: v for k, v in context.items() if k in params}


BACKBONES = Registry("backbones", ("petkit.models.backbones", "petkit.models.scratch"))
HEADS = Registry("heads", ("petkit.models.heads",))
LOSSES = Registry("losses", ("petkit.losses.triplet", "petkit.losses.pairs", "petkit.losses.classifier", "petkit.losses.combined"), noun="loss")
MINERS = Registry("miners", ("petkit.miners.triplet", "petkit.miners.pairs"))
SAMPLERS = Registry("samplers", ("petkit.data.samplers",))
AUGMENTATIONS = Registry("augmentations", ("petkit.data.augment",))
OPTIMIZERS = Registry("optimizers", ("petkit.engine.optim",))
SCHEDULES = Registry("schedules", ("petkit.engine.schedule",))
DATASETS = Registry("datasets", ("petkit.data.sources", "petkit.data.course"))
EVALUATORS = Registry("evaluators", ("petkit.evaluation.evaluators", "petkit.evaluation.identification"))
SUBMISSIONS = Registry("submissions", ("petkit.submit.writers",))

ALL_REGISTRIES: tuple[Registry, ...] = (
    BACKBONES, HEADS, LOSSES, MINERS, SAMPLERS, AUGMENTATIONS, OPTIMIZERS, SCHEDULES, DATASETS, EVALUATORS, SUBMISSIONS,
)
