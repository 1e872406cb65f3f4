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

import importlib.metadata as metadata
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from stnkit import hookspecs
from stnkit.errors import PluginError, RegistryError, StnkitError
from stnkit.registry import Registry

__all__ = ["CORE_DISTRIBUTION", "GROUP", "LoadedPlugin", "Plugins", "load_plugins"]

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
    """The plugin manager of one process plus the registries its plugins filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: dict[str, LoadedPlugin] = {}
        self.skipped: list[str] = []
        from stnkit.augment import Augmentation
        from stnkit.data import Dataset
        from stnkit.hyper.kinds import HyperKind
        from stnkit.model import StnModel
        from stnkit.objective import Objective
        from stnkit.observer import Observer
        from stnkit.response.base import ResponseModel

        self.kinds: Registry[HyperKind] = Registry("hyperparameter kind", HyperKind)
        self.responses: Registry[ResponseModel] = Registry("response model", ResponseModel)
        self.models: Registry[StnModel] = Registry("model", StnModel)
        self.objectives: Registry[Objective] = Registry("objective", Objective)
        self.augmentations: Registry[Augmentation] = Registry("augmentation", Augmentation)
        self.datasets: Registry[Dataset] = Registry("data set", Dataset)
        self.observers: Registry[Observer] = Registry("observer", Observer)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(
        self,
        plugin: object,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object (usually a module) under ``name``."""
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            raise PluginError(f"plugin {name!r}{_from(distribution)} has a bad hook: {error}") from None
        except ValueError as error:
            raise PluginError(f"plugin {name!r}{_from(distribution)} cannot be registered: {error}") from None
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.loaded[name] = LoadedPlugin(name, module, distribution, version)

    def check(self) -> None:
        """Make a misspelled hook (an implementation of no known hook) a loud error."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            plugin = self.pm.get_name(error.plugin) if error.plugin is not None else "?"
            raise PluginError(f"plugin {plugin!r} implements an unknown hook: {error}") from None

    def collect(self) -> None:
        """Run every registration hook, recording which plugin registered what."""
        for hook_name, (attribute, _word) in REGISTRATION_HOOKS.items():
            registry: Registry[Any] = getattr(self, attribute)
            caller = getattr(self.pm.hook, hook_name)
            for impl in reversed(caller.get_hookimpls()):
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
        register = registry.registrar(impl.plugin_name)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except StnkitError:
            raise
        except Exception as error:  # a plugin's own bug: name the plugin, keep the cause
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed while registering components: "
                f"{type(error).__name__}: {error}"
            ) from error

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
) -> Plugins:
    """Build the plugin manager: core and installed plugins, then ``extra`` ``(name, plugin)``.

    ``autoload=False`` loads only the core distribution's entry points (what tests use to stay
    independent of whatever else is installed).
    """
    env = os.environ if env is None else env
    disabled = _names(env.get("STNKIT_DISABLE_PLUGINS"))
    disable_all = bool(disabled & {"1", "all", "true", "yes"})
    allow = _names(env.get("STNKIT_PLUGINS"))
    plugins = Plugins()
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
            hint = f"; disable it with STNKIT_DISABLE_PLUGINS={ep.name}" if not is_core else ""
            raise PluginError(
                f"plugin {ep.name!r}{_from(dist)} failed to import ({ep.value}): "
                f"{type(error).__name__}: {error}{hint}"
            ) from error
        if plugins.pm.has_plugin(ep.name):
            other = plugins.loaded[ep.name].distribution
            raise PluginError(f"two plugins are named {ep.name!r}: from distributions {other!r} and {dist!r}")
        plugins.register(module, ep.name, dist, version)
    if not core_found:
        raise PluginError(
            "stnkit's built-in plugins are not registered: install stnkit (pip install -e .) "
            "so its entry points exist"
        )
    for name, plugin in extra:
        plugins.register(plugin, name)
    plugins.check()
    try:
        plugins.collect()
    except RegistryError as error:
        raise PluginError(str(error)) from None
    return plugins


def _canonical(name: str | None) -> str:
    return (name or "").lower().replace("_", "-")


def registrar_for(plugins: Plugins, attribute: str) -> Callable[[type[Any]], object]:
    """``register`` callable for a registry, for code that registers components directly."""
    registry: Registry[Any] = getattr(plugins, attribute)
    return registry.registrar("<direct>")
