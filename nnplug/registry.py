"""Plugin discovery: entry points of the ``nnplug`` group -> type name -> class.

Each plugin is imported and asked for its classes on its own; a plugin that fails in any
way is recorded with its distribution, version and error and contributes nothing, so the
others still load and nothing stays half-registered.
"""

from __future__ import annotations

import difflib
import importlib
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from nnplug import hookspecs
from nnplug.errors import ConfigError, PluginError, exception_text
from nnplug.layer import Layer, Loss, contract_problem

DISABLE_AUTOLOAD_ENV = "NNPLUG_DISABLE_PLUGIN_AUTOLOAD"

LayerClass = type[Layer] | type[Loss]


@dataclass
class PluginInfo:
    """What the registry knows of one plugin, loaded or not."""

    name: str  # the entry-point name, or the module name of an explicitly given plugin
    distribution: str  # the installed distribution providing it ("-" for an in-process one)
    version: str
    target: str  # what the entry point points at ("module" or "module:attr")
    status: str = "not loaded"  # loaded | failed | blocked | disabled
    error: str | None = None
    types: list[str] = field(default_factory=list)  # registered, or claimed when failed

    @property
    def names(self) -> set[str]:
        """What ``-p`` and ``blocked`` may call it, lower-cased: the entry point's name, its
        distribution and its module."""
        return {self.name.lower(), self.distribution.lower(), self.target.partition(":")[0].lower()}

    @property
    def label(self) -> str:
        """``distribution version (plugin name)``, as error messages name a plugin."""
        if self.distribution == "-":
            return f"plugin {self.name!r}"
        return f"distribution {self.distribution} {self.version} (plugin {self.name!r})"


def autoload_disabled() -> bool:
    """Whether ``NNPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set: to any value but empty, 0 or false
    (as pytest reads its ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, which any value sets)."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false")


def _entry_points() -> list[metadata.EntryPoint]:
    seen: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "-"
        seen.setdefault((dist.lower(), ep.name), ep)  # a dist found twice on sys.path
    return [seen[key] for key in sorted(seen)]


class Registry:
    """Layer and loss classes by type name, gathered from plugins.

    Args:
        plugins: extra plugins to load: entry-point or distribution names, importable module
            names, or plugin objects (modules or objects with ``@hookimpl`` functions).
        blocked: entry-point, distribution or module names never to load (``-p no:NAME``).
        autoload: load every installed entry point. Default: true unless
            ``NNPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set, in which case only ``plugins`` load.
        strict: a plugin named in ``plugins`` that fails to load (a typo, an import error)
            raises :class:`PluginError`; an installed plugin that fails is only recorded in
            :attr:`plugins`, and does not take the others down. ``strict=False`` records
            named ones too (the CLI shows its plugins table first).

    Raises:
        PluginError: with ``strict``, a plugin named in ``plugins`` failed to load.
    """

    def __init__(
        self,
        plugins: Sequence[Any] | None = (),
        *,
        blocked: Iterable[str] | None = (),
        autoload: bool | None = None,
        strict: bool = True,
    ) -> None:
        self.manager = _new_manager()
        self.plugins: list[PluginInfo] = []
        self._types: dict[str, LayerClass] = {}
        self._owner: dict[str, PluginInfo] = {}
        self._claims: dict[str, list[tuple[PluginInfo, LayerClass]]] = {}
        self._conflicts: dict[str, str] = {}
        plugins, blocked = _sequence("plugins", plugins), _sequence("blocked", blocked)
        if not all(isinstance(name, str) for name in blocked):
            raise ConfigError(f"blocked: expected plugin names, got {list(blocked)!r}")
        if any(p is None for p in plugins):
            raise ConfigError(f"plugins: None is not a plugin, got {list(plugins)!r}")
        blocked_names = {name.lower() for name in blocked}
        if autoload is None:
            autoload = not autoload_disabled()
        #: why no installed plugin was loaded, when that is so (for unknown-type messages)
        self._not_autoloaded = "" if autoload else (
            f"{DISABLE_AUTOLOAD_ENV}={os.environ.get(DISABLE_AUTOLOAD_ENV)!r} is set, so only plugins named "
            "with -p NAME load" if autoload_disabled()
            else "autoload=False: name plugins in Registry(plugins=[...])")
        wanted = [p for p in plugins if isinstance(p, str)]
        wanted_lower = {name.lower() for name in wanted}
        matched: set[str] = set()
        for ep in _entry_points():
            info = _info_for(ep)
            names = info.names
            self.plugins.append(info)
            if names & blocked_names:
                info.status = "blocked"
                continue
            if not autoload and not names & wanted_lower:
                info.status = "disabled"
                continue
            matched |= {n for n in wanted if n.lower() in names}
            self._load(info, ep.load)
        for plugin in plugins:
            if isinstance(plugin, str):
                if plugin in matched or plugin.lower() in blocked_names:
                    continue
                info = PluginInfo(plugin, "-", "-", plugin)
                self.plugins.append(info)
                self._load(info, lambda name=plugin: importlib.import_module(name))
                if info.status == "failed" and _missing_module(plugin, info.error):
                    installed = sorted({f"{i.name} ({i.distribution})" for i in self.plugins if i.distribution != "-"})
                    info.error = (f"no installed plugin (entry-point or distribution name) and no importable "
                                  f"module is named {plugin!r} (installed plugins: "
                                  f"{', '.join(installed) or 'none'})")
            else:
                name = getattr(plugin, "__name__", None) or type(plugin).__name__
                if self.manager.is_registered(plugin):  # an installed plugin's module, loaded above
                    wanted.append(name)
                    continue
                info = PluginInfo(name, "-", "-", name)
                self.plugins.append(info)
                self._load(info, lambda obj=plugin: obj)
                wanted.append(name)
        self._resolve_claims()
        if strict:
            self.raise_for_named(wanted)

    def raise_for_named(self, names: Iterable[str]) -> None:
        """Raise :class:`PluginError` for the first of ``names`` (entry-point, distribution or
        module names) whose plugin failed to load, naming it and its error."""
        wanted = {name.lower() for name in names}
        for info in self.plugins:
            if info.status == "failed" and info.names & wanted:
                raise PluginError(f"plugin {info.name!r} failed to load: {info.error}")

    # -- loading -------------------------------------------------------------------------

    def _load(self, info: PluginInfo, importer: Any) -> None:
        """Import one plugin and register all of its classes, or none of them."""
        try:
            plugin = importer()
        except (Exception, SystemExit) as exc:
            return self._fail(info, f"import failed: {exception_text(exc)}")
        try:
            self.manager.register(plugin, name=f"{info.distribution}:{info.name}")
        except (Exception, SystemExit) as exc:
            # pluggy's message spans lines; one line keeps it whole wherever it is quoted
            return self._fail(info, f"invalid hook implementation: {' '.join(str(exc).split())}")
        try:
            others = [p for p in self.manager.get_plugins() if p is not plugin]
            caller = self.manager.subset_hook_caller("nnplug_register_layers", others)
            returned = caller()
        except (Exception, SystemExit) as exc:
            self.manager.unregister(plugin)
            return self._fail(info, f"nnplug_register_layers raised {exception_text(exc)}")
        if not returned:  # pluggy drops None results, and a plugin may lack the hook entirely
            impls = [i for i in self.manager.hook.nnplug_register_layers.get_hookimpls() if i.plugin is plugin]
            self.manager.unregister(plugin)
            if impls:
                return self._fail(info, "nnplug_register_layers returned None, expected a list of classes")
            return self._fail(info, "no nnplug_register_layers hook: mark it with @nnplug.hookimpl")
        bad = [r for r in returned if not isinstance(r, (list, tuple))]
        if bad:
            self.manager.unregister(plugin)
            return self._fail(info, f"nnplug_register_layers returned {bad[0]!r}, expected a list of classes")
        classes = [cls for result in returned for cls in result]
        staged: dict[str, LayerClass] = {}
        problems = []
        for cls in classes:
            problem = contract_problem(cls)
            if problem:
                problems.append(problem)
                continue
            name = cls.type_name()  # contract_problem checked it is a single Literal
            if name in staged and staged[name] is not cls:
                problems.append(f"type {name!r} is claimed twice within the plugin, by "
                                f"{staged[name].__qualname__} and {cls.__qualname__}")
            staged[name] = cls
        info.types = list(staged)
        if problems:
            self.manager.unregister(plugin)
            return self._fail(info, "; ".join(problems))
        info.status = "loaded"
        for name, cls in staged.items():
            self._claims.setdefault(name, []).append((info, cls))

    def _resolve_claims(self) -> None:
        """Register each type claimed by one class; a name two classes claim is refused for both,
        whatever the load order, so no plugin silently shadows another."""
        for name, claims in self._claims.items():
            classes = {cls for _, cls in claims}
            if len(classes) == 1:
                self._types[name] = claims[0][1]
                self._owner[name] = claims[0][0]
                continue
            labels = " and ".join(info.label for info, _ in claims)
            message = (f"type {name!r} is claimed by both {labels}; neither is registered "
                       f"(block one with -p no:NAME)")
            self._conflicts[name] = message
            for info, _ in claims:
                info.error = "; ".join(filter(None, [info.error, message]))

    @staticmethod
    def _fail(info: PluginInfo, error: str) -> None:
        info.status = "failed"
        info.error = error

    # -- copies --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The registry without its plugin manager, which holds plugin modules (unpicklable):
        a module is kept by name and imported again on unpickling, so a model, which holds its
        registry, can be deep-copied and handed to a spawned worker process."""
        state = self.__dict__.copy()
        state["manager"] = [(name, plugin.__name__ if isinstance(plugin, ModuleType) else plugin)
                            for name, plugin in self.manager.list_name_plugin()]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        registered = state.pop("manager")
        self.__dict__.update(state)
        self.manager = _new_manager()
        for name, plugin in registered:
            self.manager.register(importlib.import_module(plugin) if isinstance(plugin, str) else plugin, name=name)

    # -- queries -------------------------------------------------------------------------

    @property
    def types(self) -> dict[str, LayerClass]:
        """Every registered type name and its class, in registration order."""
        return dict(self._types)

    @property
    def conflicts(self) -> dict[str, str]:
        """Type names two plugins claim, neither registered, with the message saying so."""
        return dict(self._conflicts)

    @property
    def not_autoloaded(self) -> str:
        """Why the installed plugins were not loaded ('' when they were): for messages about
        a type that is missing."""
        return self._not_autoloaded

    def layer_types(self) -> list[str]:
        return [n for n, c in self._types.items() if issubclass(c, Layer)]

    def loss_types(self) -> list[str]:
        return [n for n, c in self._types.items() if issubclass(c, Loss)]

    def __contains__(self, type_name: object) -> bool:
        return isinstance(type_name, str) and type_name in self._types

    def plugin_of(self, type_name: str) -> PluginInfo:
        """The plugin that registered ``type_name``."""
        self.get(type_name)
        return self._owner[type_name]

    def get(self, type_name: str) -> LayerClass:
        """The class registered as ``type_name``.

        Raises:
            PluginError: naming the failed plugin that claimed it, or listing the available
                types and the nearest match.
        """
        if not isinstance(type_name, str):
            raise PluginError(f"a type name is a string, got {type(type_name).__name__} {type_name!r}")
        if type_name in self._types:
            return self._types[type_name]
        raise PluginError(self.unknown_type_message(type_name))

    def unknown_type_message(self, type_name: str, kinds: Sequence[str] | None = None) -> str:
        if type_name in self._conflicts:
            return self._conflicts[type_name]
        for info in self.plugins:
            if info.status == "failed" and type_name in info.types:
                return f"type {type_name!r} comes from {info.label}, which failed: {info.error}"
        available = list(kinds) if kinds is not None else sorted(self._types)
        why = self._not_autoloaded or "every plugin failed or was blocked: see `nnplug plugins`"
        message = f"unknown type {type_name!r}"
        # A plugin that failed before returning its classes may have been the type's home:
        # name each with its error (first, before the long list of what is available), so the
        # user need not run `nnplug plugins` to find out.
        failed = [f"{i.label}: {first_line(i.error, 200)}" for i in self.plugins if i.status == "failed"]
        if failed:
            message += f"; plugins that failed to load: {'; '.join(failed)}"
        # A blocked plugin is never imported, so its types are unknown, but it may well be the
        # type's home: a `-p no:NAME` left in a command is easy to miss.
        blocked = [f"{i.name} (distribution {i.distribution})" for i in self.plugins if i.status == "blocked"]
        if blocked:
            message += f"; blocked with -p no:NAME: {', '.join(blocked)}"
        if available:
            message += f"; available: {', '.join(sorted(available))}"
            if self._not_autoloaded:  # the type may be installed, in a plugin not loaded
                message += f" ({self._not_autoloaded})"
        else:
            message += f"; no types are registered ({why})"
        near = difflib.get_close_matches(str(type_name), available, n=1, cutoff=0.6)
        if near:
            message += f" (did you mean {near[0]!r}?)"
        foreign = [ch for ch in dict.fromkeys(str(type_name)) if not ch.isascii()]
        if foreign:  # a Cyrillic 'е' looks like 'e' and reads as a typo nobody can see
            shown = ", ".join(f"{ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})" for ch in foreign[:3])
            message += f"; the name holds non-ASCII characters: {shown}"
        return message


def first_line(error: str | None, limit: int | None = None) -> str:
    """A plugin's error as one line (of at most ``limit`` characters, for a message listing
    several)."""
    line = error.splitlines()[0] if error else "unknown error"
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


def _missing_module(name: str, error: str | None) -> bool:
    """Whether importing ``name`` failed because no module of that name exists (not a module
    that exists and fails inside)."""
    return bool(error) and f"No module named {name.split('.')[0]!r}" in str(error)


def _sequence(option: str, value: Any) -> tuple[Any, ...]:
    """A list of plugins or names; one bare name would otherwise be read letter by letter."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{option}: expected a list, got {type(value).__name__} {value!r}"
                          f"{f'; write [{value!r}]' if isinstance(value, str) else ''}")
    return tuple(value)


def _new_manager() -> pluggy.PluginManager:
    """An empty pluggy manager that knows nnplug's hook specification."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def _info_for(ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(
        name=ep.name,
        distribution=dist.name if dist is not None else "-",
        version=dist.version if dist is not None else "-",
        target=ep.value,
    )


def load_registry(plugins: Sequence[Any] | None = (), blocked: Iterable[str] | None = ()) -> Registry:
    """The installed plugins (all of them unless autoload is disabled), plus ``plugins``."""
    return Registry(plugins, blocked=blocked)
