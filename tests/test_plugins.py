"""Plugin discovery through entry points, switches, and clear errors for broken plugins."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import pytest

from stnkit.cli import main
from stnkit.errors import PluginError
from stnkit.plugins import PluginWarning, load_plugins

GOOD_PLUGIN = '''
from stnkit import hookimpl
from stnkit.hyper.kinds import HyperKind, HyperConfig
import torch

class LogUniformKind(HyperKind):
    """Values in (low, high) on a log scale."""
    name = "log-interval"
    class Config(HyperConfig):
        low: float
        high: float
    def constrain(self, u):
        lo, hi = torch.log(torch.tensor(self.config.low)), torch.log(torch.tensor(self.config.high))
        return torch.exp(lo + (hi - lo) * torch.sigmoid(u))
    def unconstrain(self, x):
        lo, hi = torch.log(torch.tensor(self.config.low)), torch.log(torch.tensor(self.config.high))
        p = (torch.log(x) - lo) / (hi - lo)
        return torch.log(p) - torch.log1p(-p)

@hookimpl
def stnkit_register_hyperparameter_kinds(register):
    register(LogUniformKind)
'''


def fake_distribution(root: Path, name: str, module: str, source: str, entry: str | None = None) -> None:
    """Install a distribution into ``root`` the way pip would: module + dist-info with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"  # pip normalises the folder name
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[stnkit]\n{entry or name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def env(**values: str) -> dict[str, str]:
    # every installed plugin but the example distribution, which CI installs into the same
    # environment (after this suite) and a local re-run would otherwise count as core components
    return {"STNKIT_PLUGINS": "", "STNKIT_DISABLE_PLUGINS": "stnkit-example-plugin", **values}


def test_core_components_are_registered_through_entry_points() -> None:
    plugins = load_plugins(env=env())
    assert set(plugins.kinds) == {"unit", "interval", "positive", "integer"}
    assert set(plugins.responses) >= {"stn", "fixed"}
    assert plugins.loaded["stnkit.kinds"].distribution == "stnkit"
    assert plugins.kinds.entry("unit").plugin == "stnkit.kinds"


def test_third_party_plugin_is_discovered(site: Path) -> None:
    fake_distribution(site, "stnkit-logkind", "stnkit_logkind_fake", GOOD_PLUGIN, entry="logkind")
    plugins = load_plugins(env=env())
    assert "log-interval" in plugins.kinds
    assert plugins.loaded["logkind"].distribution == "stnkit-logkind"
    assert plugins.loaded["logkind"].registers == {"kinds": ["log-interval"]}


def test_disable_and_allow_switches(site: Path) -> None:
    fake_distribution(site, "stnkit-logkind", "stnkit_logkind_fake2", GOOD_PLUGIN, entry="logkind")
    assert "log-interval" not in load_plugins(env={"STNKIT_DISABLE_PLUGINS": "1"}).kinds
    assert "log-interval" not in load_plugins(env={"STNKIT_DISABLE_PLUGINS": "logkind"}).kinds
    assert "log-interval" not in load_plugins(env={"STNKIT_PLUGINS": "tabular"}).kinds
    assert "log-interval" in load_plugins(env={"STNKIT_PLUGINS": "stnkit-logkind"}).kinds
    disabled = load_plugins(env={"STNKIT_DISABLE_PLUGINS": "all"})
    assert "unit" in disabled.kinds  # the core always loads
    assert "logkind" in disabled.skipped


def test_import_error_names_the_plugin(site: Path) -> None:
    fake_distribution(
        site, "stnkit-broken", "stnkit_broken_fake", "import not_a_module_xyz\n", entry="broken"
    )
    with pytest.raises(PluginError) as info:
        load_plugins(env=env())
    message = str(info.value)
    assert "plugin 'broken'" in message and "stnkit-broken" in message
    assert "not_a_module_xyz" in message and "STNKIT_DISABLE_PLUGINS=broken" in message


def test_misspelled_hook_is_loud(site: Path) -> None:
    source = "from stnkit import hookimpl\n@hookimpl\ndef stnkit_register_modles(register):\n    pass\n"
    fake_distribution(site, "stnkit-typo", "stnkit_typo_fake", source, entry="typo")
    with pytest.raises(PluginError) as info:
        load_plugins(env=env())
    message = str(info.value)
    assert "plugin 'typo'" in message and "unknown hook 'stnkit_register_modles'" in message
    assert "did you mean 'stnkit_register_models'?" in message
    assert "'stnkit-typo'" in message and "STNKIT_DISABLE_PLUGINS=typo" in message


def test_functions_without_hookimpl_are_warned_about(site: Path) -> None:
    # pluggy silently ignores an unmarked stnkit_* function: the plugin registered nothing
    source = textwrap.dedent(
        """
        from stnkit.hyper.kinds import UnitKind
        class Other(UnitKind):
            name = "unmarked-unit"
        def stnkit_register_hyperparameter_kinds(register):
            register(Other)
        def helper():
            pass
        """
    )
    fake_distribution(site, "stnkit-unmarked", "stnkit_unmarked_fake", source, entry="unmarked")
    with pytest.warns(PluginWarning) as caught:
        plugins = load_plugins(env=env())
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "plugin 'unmarked'" in message and "'stnkit-unmarked'" in message
    assert "stnkit_register_hyperparameter_kinds()" in message and "@hookimpl" in message
    assert "unmarked-unit" not in plugins.kinds


def test_cli_prints_the_unmarked_warning_as_one_line(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.cli as cli

    source = "def stnkit_register_models(register):\n    pass\n"
    fake_distribution(site, "stnkit-unmarked2", "stnkit_unmarked2_fake", source, entry="unmarked2")
    monkeypatch.setattr(cli, "_plugins", None)
    monkeypatch.setattr(cli, "_commands_added", False)
    monkeypatch.setenv("STNKIT_PLUGINS", "unmarked2")
    assert main(["plugins"]) == 0
    err = capsys.readouterr().err
    assert "warning: plugin 'unmarked2'" in err and "stnkit_register_models()" in err
    assert "Traceback" not in err and "warnings.warn" not in err


def test_marked_hooks_raise_no_warning(site: Path) -> None:
    fake_distribution(site, "stnkit-logkind", "stnkit_logkind_fake3", GOOD_PLUGIN, entry="logkind")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        load_plugins(env=env())


def test_kind_config_must_be_a_hyper_config(site: Path) -> None:
    source = textwrap.dedent(
        """
        import torch
        from stnkit import hookimpl
        from stnkit.config import ComponentConfig
        from stnkit.hyper.kinds import HyperKind
        class Bad(HyperKind):
            name = "bad-config"
            class Config(ComponentConfig):
                init: float
            def constrain(self, u):
                return torch.sigmoid(u)
            def unconstrain(self, x):
                return torch.log(x) - torch.log1p(-x)
        @hookimpl
        def stnkit_register_hyperparameter_kinds(register):
            register(Bad)
        """
    )
    fake_distribution(site, "stnkit-badconfig", "stnkit_badconfig_fake", source, entry="badconfig")
    with pytest.raises(PluginError) as info:
        load_plugins(env=env())
    message = str(info.value)
    assert "'bad-config'" in message and "plugin 'badconfig'" in message and "'stnkit-badconfig'" in message
    assert "must subclass stnkit.hyper.kinds.HyperConfig" in message
    assert "STNKIT_DISABLE_PLUGINS=badconfig" in message


def test_bad_hook_arguments_are_rejected(site: Path) -> None:
    source = (
        "from stnkit import hookimpl\n@hookimpl\ndef stnkit_register_models(register, colour):\n    pass\n"
    )
    fake_distribution(site, "stnkit-args", "stnkit_args_fake", source, entry="args")
    with pytest.raises(PluginError, match="'args'.*bad hook"):
        load_plugins(env=env())


def test_duplicate_component_names_name_both_plugins(site: Path) -> None:
    source = textwrap.dedent(
        """
        from stnkit import hookimpl
        from stnkit.hyper.kinds import UnitKind
        class Other(UnitKind):
            name = "unit"
        @hookimpl
        def stnkit_register_hyperparameter_kinds(register):
            register(Other)
        """
    )
    fake_distribution(site, "stnkit-dup", "stnkit_dup_fake", source, entry="dup")
    with pytest.raises(PluginError) as info:
        load_plugins(env=env())
    assert str(info.value).startswith(
        "hyperparameter kind 'unit' is registered twice: by plugin 'stnkit.kinds' (distribution "
        "'stnkit') and by plugin 'dup' (distribution 'stnkit-dup')"
    )
    assert "STNKIT_DISABLE_PLUGINS=dup" in str(info.value)


def test_crash_while_registering_names_the_plugin(site: Path) -> None:
    source = "from stnkit import hookimpl\n@hookimpl\ndef stnkit_register_models(register):\n    1/0\n"
    fake_distribution(site, "stnkit-crash", "stnkit_crash_fake", source, entry="crash")
    with pytest.raises(
        PluginError,
        match="'crash' .from distribution 'stnkit-crash'. failed while registering.*ZeroDivisionError",
    ):
        load_plugins(env=env())


def test_plugins_command_lists_what_each_registers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["tabular"]["registers"] == {"models": ["stn-mlp"], "datasets": ["tabular"]}
    assert listed["stnkit.hdf5-store"]["hooks"] == ["stnkit_make_store"]
    assert main(["plugins"]) == 0
    assert "stn-mlp" in capsys.readouterr().out


BROKEN_HALFWAY = textwrap.dedent(
    """
    from stnkit import hookimpl
    from stnkit.hyper.kinds import UnitKind
    class Half(UnitKind):
        name = "half-unit"
    @hookimpl
    def stnkit_register_hyperparameter_kinds(register):
        register(Half)
    @hookimpl
    def stnkit_register_models(register):
        raise RuntimeError("boom")
    """
)


def test_tolerant_load_leaves_a_broken_plugin_out(site: Path) -> None:
    fake_distribution(site, "stnkit-half", "stnkit_half_fake", BROKEN_HALFWAY, entry="half")
    fake_distribution(site, "stnkit-logkind", "stnkit_logkind_fake4", GOOD_PLUGIN, entry="logkind")
    with pytest.raises(PluginError, match="'half'.*failed while registering.*boom"):
        load_plugins(env=env())
    plugins = load_plugins(env=env(), tolerant=True)
    assert [b.name for b in plugins.broken] == ["half"]
    assert "half" not in plugins.loaded and "half-unit" not in plugins.kinds  # nothing half-registered
    assert "log-interval" in plugins.kinds and "stn-mlp" in plugins.models  # the others go on
    assert not plugins.pm.has_plugin("half")
    with pytest.raises(PluginError, match="boom"):
        plugins.require_healthy()


@pytest.fixture
def broken_cli(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI process with one plugin that fails to import."""
    import stnkit.cli as cli

    fake_distribution(
        site, "stnkit-broken2", "stnkit_broken2_fake", "raise RuntimeError('boom')\n", entry="b2"
    )
    monkeypatch.setattr(cli, "_plugins", None)
    monkeypatch.setattr(cli, "_reported_broken", False)
    monkeypatch.setattr(cli, "_commands_added", False)
    monkeypatch.setenv("STNKIT_PLUGINS", "")


@pytest.mark.usefixtures("broken_cli")
def test_broken_plugin_does_not_block_reading_commands(
    capsys: pytest.CaptureFixture[str], ridge_recipe: Path
) -> None:
    import stnkit

    result = stnkit.run(
        ridge_recipe, overrides=["train.epochs=1"], plugins=load_plugins(env={"STNKIT_PLUGINS": "tabular"})
    )
    assert result.path is not None
    assert main(["--help"]) == 0
    captured = capsys.readouterr()
    assert "plugin 'b2'" in captured.err and "boom" in captured.err and "Traceback" not in captured.err
    assert "Commands" in captured.out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "b2" in out and "broken" in out and "stn-mlp" in out
    assert main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in listed["broken"]] == ["b2"] and "boom" in listed["broken"][0]["message"]
    assert main(["ls", str(result.path.parent)]) == 0
    assert "ridge" in capsys.readouterr().out
    assert main(["ls", str(result.path.parent), "--json"]) == 0
    assert result.path.name in capsys.readouterr().out
    assert main(["show", str(result.path)]) == 0
    assert "weight_decay" in capsys.readouterr().out


@pytest.mark.usefixtures("broken_cli")
def test_broken_plugin_still_stops_commands_that_build(
    capsys: pytest.CaptureFixture[str], ridge_recipe: Path
) -> None:
    assert main(["validate", str(ridge_recipe)]) == 1
    err = capsys.readouterr().err
    assert "plugin 'b2'" in err and "'stnkit-broken2'" in err and "boom" in err
    assert "STNKIT_DISABLE_PLUGINS=b2" in err and "Traceback" not in err
    assert main(["run", str(ridge_recipe), "--quiet"]) == 1
    assert "boom" in capsys.readouterr().err
    assert not (ridge_recipe.parent / "runs").exists()  # nothing half-written


def test_plugin_commands_join_the_cli(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.cli as cli

    source = textwrap.dedent(
        """
        from stnkit import hookimpl
        @hookimpl
        def stnkit_register_commands(app):
            @app.command("hello-fake")
            def hello(name: str = "world"):
                print(f"hello {name}")
        """
    )
    fake_distribution(site, "stnkit-hello", "stnkit_hello_fake", source, entry="hello")
    monkeypatch.setattr(cli, "_plugins", None)
    monkeypatch.setattr(cli, "_commands_added", False)
    monkeypatch.setenv("STNKIT_PLUGINS", "hello")
    assert main(["hello-fake", "--name", "stn"]) == 0
    assert capsys.readouterr().out.strip() == "hello stn"


def test_a_crashing_command_plugin_does_not_block_help(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.cli as cli

    source = textwrap.dedent(
        """
        from stnkit import hookimpl
        @hookimpl
        def stnkit_register_commands(app):
            raise RuntimeError("no commands today")
        """
    )
    fake_distribution(site, "stnkit-nocmd", "stnkit_nocmd_fake", source, entry="nocmd")
    monkeypatch.setattr(cli, "_plugins", None)
    monkeypatch.setattr(cli, "_commands_added", False)
    monkeypatch.setenv("STNKIT_PLUGINS", "nocmd")
    assert main(["--help"]) == 0
    captured = capsys.readouterr()
    assert "plugin 'nocmd' (from distribution 'stnkit-nocmd') failed to add its commands" in captured.err
    assert "no commands today" in captured.err and "Commands" in captured.out
