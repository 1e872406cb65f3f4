"""The plugin manager: entry-point discovery, registries and the disable/allow switches.

Every component — stnkit's own included — arrives through the entry-point group ``stnkit``; the
core distribution lists its built-in plugins there exactly as a third party would. Environment:

``STNKIT_DISABLE_PLUGINS``
    ``1``/``all``: load no plugin outside the core distribution; otherwise a comma-separated list
    of entry-point or distribution names to skip.
``STNKIT_PLUGINS``
    comma-separated allowlist: load only these plugins (entry-point or distribution names) besides
    the core ones.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import inspect
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from stnkit import hookspecs
from stnkit.errors import PluginError, RegistryError, StnkitError
from stnkit.registry import Registry

__all__ = [
    "CORE_DISTRIBUTION",
    "GROUP",
    "BrokenPlugin",
    "LoadedPlugin",
    "PluginWarning",
    "Plugins",
    "load_plugins",
]

GROUP = "stnkit"
CORE_DISTRIBUTION = "stnkit"

#: registration hook → (registry attribute, word used in messages)
REGISTRATION_HOOKS: dict[str, tuple[str, str]] = {
    "stnkit_register_hyperparameter_kinds": ("kinds", "hyperparameter kind"),
    "stnkit_register_response_models": ("responses", "response model"),
    "stnkit_register_models": ("models", "model"),
    "stnkit_register_objectives": ("objectives", "objective"),
    "stnkit_register_augmentations": ("augmentations", "augmentation"),
    "stnkit_register_datasets": ("datasets", "data set"),
    "stnkit_register_observers": ("observers", "observer"),
}


class PluginWarning(UserWarning):
    """A plugin loaded, but something in it is probably not what its author meant."""


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to load or register; ``message`` says why, naming it and its
    distribution. A tolerant load (:func:`load_plugins` with ``tolerant=True``) leaves it out and
    records it here instead of raising."""

    name: str
    distribution: str | None
    message: str


@dataclass
class LoadedPlugin:
    """One registered plugin and where it came from."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)

    @property
    def core(self) -> bool:
        return self.distribution == CORE_DISTRIBUTION


class Plugins:
    """The plugin manager of one process plus the registries its plugins filled.

    ``broken`` lists plugins a tolerant load left out; :meth:`require_healthy` turns them into the
    error a command that builds components must stop with.
    """

    def __init__(self, tolerant: bool = False) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: dict[str, LoadedPlugin] = {}
        self.skipped: list[str] = []
        self.broken: list[BrokenPlugin] = []
        self.tolerant = tolerant
        from stnkit.augment import Augmentation
        from stnkit.data import Dataset
        from stnkit.hyper.kinds import HyperConfig, HyperKind
        from stnkit.model import StnModel
        from stnkit.objective import Objective
        from stnkit.observer import Observer
        from stnkit.response.base import ResponseModel

        self.kinds: Registry[HyperKind] = Registry("hyperparameter kind", HyperKind, HyperConfig)
        self.responses: Registry[ResponseModel] = Registry("response model", ResponseModel)
        self.models: Registry[StnModel] = Registry("model", StnModel)
        self.objectives: Registry[Objective] = Registry("objective", Objective)
        self.augmentations: Registry[Augmentation] = Registry("augmentation", Augmentation)
        self.datasets: Registry[Dataset] = Registry("data set", Dataset)
        self.observers: Registry[Observer] = Registry("observer", Observer)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def fail(
        self, name: str, distribution: str | None, message: str, cause: BaseException | None = None
    ) -> None:
        """A plugin is broken: raise, or (tolerant) record it and take it out of the manager and
        the registries so nothing half-registered stays behind."""
        if not self.tolerant:
            raise PluginError(message) from cause
        if any(b.name == name for b in self.broken):
            return
        self.broken.append(BrokenPlugin(name, distribution, message))
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.loaded.pop(name, None)
        for attribute, _word in REGISTRATION_HOOKS.values():
            registry: Registry[Any] = getattr(self, attribute)
            registry.remove_plugin(name)

    def require_healthy(self) -> None:
        """Raise the :class:`PluginError` a tolerant load deferred, if any plugin is broken."""
        if self.broken:
            raise PluginError("\n".join(b.message for b in self.broken))

    def register(
        self,
        plugin: object,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object (usually a module) under ``name``."""
        _warn_unmarked(plugin, name, distribution)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            self.fail(
                name,
                distribution,
                f"plugin {name!r}{_from(distribution)} has a bad hook: {error}"
                f"{_disable_hint(name, distribution)}",
            )
            return
        except ValueError as error:
            self.fail(
                name, distribution, f"plugin {name!r}{_from(distribution)} cannot be registered: {error}"
            )
            return
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.loaded[name] = LoadedPlugin(name, module, distribution, version)

    def check(self) -> None:
        """Make a misspelled hook (an implementation of no known hook) a loud error naming the
        plugin, its distribution and the closest known hook."""
        known = sorted(n for n in dir(hookspecs) if n.startswith("stnkit_"))
        # pluggy's own check_pending() stops at the first such hook and names neither the
        # distribution nor a close match; this walks the same public views for every plugin
        for name, plugin in self.pm.list_name_plugin():
            for caller in self.pm.get_hookcallers(plugin) or []:
                if caller.has_spec():
                    continue
                if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
                    continue
                record = self.loaded.get(name)
                dist = record.distribution if record is not None else None
                close = difflib.get_close_matches(caller.name, known, n=1, cutoff=0.6)
                suggestion = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(
                    name,
                    dist,
                    f"plugin {name!r}{_from(dist)} implements an unknown hook {caller.name!r}{suggestion}"
                    f"{_disable_hint(name, dist)}",
                )

    def collect(self) -> None:
        """Run every registration hook, recording which plugin registered what."""
        for hook_name, (attribute, _word) in REGISTRATION_HOOKS.items():
            registry: Registry[Any] = getattr(self, attribute)
            caller = getattr(self.pm.hook, hook_name)
            # in registration order: the core first, then installed plugins by distribution name,
            # so a duplicate name is blamed on the plugin that came second
            for impl in caller.get_hookimpls():
                if self.pm.get_plugin(impl.plugin_name) is None:
                    continue  # found broken by a prior hook
                before = set(registry)
                self._call_registration(impl, registry)
                added = sorted(set(registry) - before)
                record = self.loaded.get(impl.plugin_name)
                if record is not None and added:
                    record.registers.setdefault(attribute, []).extend(added)
        for record in self.loaded.values():
            plugin = self.pm.get_plugin(record.name)
            record.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def _call_registration(self, impl: pluggy.HookImpl, registry: Registry[Any]) -> None:
        """Call one plugin's registration hook alone, with a ``register`` that records the plugin.

        Through the implementation's public ``function`` and ``argnames``: pluggy's per-plugin
        caller (``subset_hook_caller``) puts plugin objects in a set, which refuses the unhashable
        objects (a ``SimpleNamespace``, an ``eq`` dataclass) pluggy otherwise registers."""
        name = impl.plugin_name
        record = self.loaded.get(name)
        dist = record.distribution if record is not None else None
        register = registry.registrar(name, dist)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except RegistryError as error:
            self.fail(name, dist, f"{error}{_disable_hint(name, dist)}")
        except StnkitError:
            raise
        except Exception as error:  # a plugin's own bug: name the plugin, keep the cause
            self.fail(
                name,
                dist,
                f"plugin {name!r}{_from(dist)} failed while registering components: "
                f"{type(error).__name__}: {error}{_disable_hint(name, dist)}",
                cause=error,
            )

    def describe(self) -> list[dict[str, Any]]:
        """What ``stnkit plugins --json`` prints: one entry per plugin."""
        return [
            {
                "name": p.name,
                "module": p.module,
                "distribution": p.distribution,
                "version": p.version,
                "core": p.core,
                "registers": p.registers,
                "hooks": p.hooks,
            }
            for p in self.loaded.values()
        ]


def _warn_unmarked(plugin: object, name: str, distribution: str | None) -> None:
    """Warn about ``stnkit_*`` functions without ``@hookimpl``: pluggy silently ignores them, so
    a plugin that forgot the marker registered nothing and nobody said why."""
    marker = f"{hookspecs.PROJECT}_impl"  # the attribute pluggy's HookimplMarker sets
    for attribute, value in vars(plugin).items() if hasattr(plugin, "__dict__") else ():
        if not attribute.startswith("stnkit_") or not inspect.isfunction(value):
            continue
        if hasattr(value, marker) or getattr(value, "__module__", None) == hookspecs.__name__:
            continue
        warnings.warn(
            f"plugin {name!r}{_from(distribution)}: {attribute}() is not marked with @hookimpl, so "
            "stnkit ignores it; decorate it (from stnkit import hookimpl)",
            PluginWarning,
            stacklevel=2,
        )


def _disable_hint(name: str, distribution: str | None) -> str:
    if _canonical(distribution) == CORE_DISTRIBUTION:
        return ""
    return f" (fix or uninstall the plugin, or disable it with STNKIT_DISABLE_PLUGINS={name})"


def _from(distribution: str | None) -> str:
    return f" (from distribution {distribution!r})" if distribution else ""


def _names(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(
        metadata.entry_points(group=GROUP), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name)
    )


def load_plugins(
    env: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
    autoload: bool = True,
    tolerant: bool = False,
) -> Plugins:
    """Build the plugin manager: core and installed plugins, then ``extra`` ``(name, plugin)``.

    ``autoload=False`` loads only the core distribution's entry points (what tests use to stay
    independent of whatever else is installed). A broken plugin (it fails to import, implements
    an unknown hook, registers a duplicate or invalid component, crashes while registering)
    raises :class:`PluginError`; with ``tolerant=True`` it is left out and listed in
    ``Plugins.broken`` instead, so commands that only read (``plugins``, ``ls``, ``show``, ``--help``)
    still work. A broken core plugin always raises.
    """
    env = os.environ if env is None else env
    disabled = _names(env.get("STNKIT_DISABLE_PLUGINS"))
    disable_all = bool(disabled & {"1", "all", "true", "yes"})
    allow = _names(env.get("STNKIT_PLUGINS"))
    plugins = Plugins(tolerant=tolerant)
    core_found = False
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        is_core = _canonical(dist) == CORE_DISTRIBUTION
        core_found |= is_core
        if not is_core:
            names = {ep.name, _canonical(dist)} if dist else {ep.name}
            if not autoload or disable_all or names & disabled or (allow and not names & allow):
                plugins.skipped.append(ep.name)
                continue
        try:
            module = ep.load()
        except Exception as error:
            plugins.fail(
                ep.name,
                dist,
                f"plugin {ep.name!r}{_from(dist)} failed to import ({ep.value}): "
                f"{type(error).__name__}: {error}{_disable_hint(ep.name, dist)}",
                cause=error,
            )
            continue
        if plugins.pm.has_plugin(ep.name):
            other = plugins.loaded[ep.name].distribution
            message = f"two plugins are named {ep.name!r}: from distributions {other!r} and {dist!r}"
            if not tolerant:
                raise PluginError(message)
            # the first one stays loaded; only the second is left out
            plugins.broken.append(BrokenPlugin(ep.name, dist, message))
            continue
        plugins.register(module, ep.name, dist, version)
    if not core_found:
        raise PluginError(
            "stnkit's built-in plugins are not registered: install stnkit (pip install -e .) "
            "so its entry points exist"
        )
    for name, plugin in extra:
        plugins.register(plugin, name)
    plugins.check()
    plugins.collect()
    core_broken = [b for b in plugins.broken if _canonical(b.distribution) == CORE_DISTRIBUTION]
    if core_broken:
        raise PluginError(core_broken[0].message)
    return plugins


def _canonical(name: str | None) -> str:
    return (name or "").lower().replace("_", "-")
