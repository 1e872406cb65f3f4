"""Plugin discovery through entry points, switches, and clear errors for broken plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from stnkit.cli import main
from stnkit.errors import PluginError
from stnkit.plugins import load_plugins

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
    with pytest.raises(PluginError, match="'typo' implements an unknown hook.*stnkit_register_modles"):
        load_plugins(env=env())


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
    with pytest.raises(
        PluginError, match="'unit' is registered twice.*'stnkit.kinds'.*'dup'|'dup'.*'stnkit.kinds'"
    ):
        load_plugins(env=env())


def test_crash_while_registering_names_the_plugin(site: Path) -> None:
    source = "from stnkit import hookimpl\n@hookimpl\ndef stnkit_register_models(register):\n    1/0\n"
    fake_distribution(site, "stnkit-crash", "stnkit_crash_fake", source, entry="crash")
    with pytest.raises(PluginError, match="'crash' failed while registering.*ZeroDivisionError"):
        load_plugins(env=env())


def test_plugins_command_lists_what_each_registers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["tabular"]["registers"] == {"models": ["stn-mlp"], "datasets": ["tabular"]}
    assert listed["stnkit.hdf5-store"]["hooks"] == ["stnkit_make_store"]
    assert main(["plugins"]) == 0
    assert "stn-mlp" in capsys.readouterr().out


def test_broken_plugin_fails_the_cli_cleanly(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.cli as cli

    fake_distribution(
        site, "stnkit-broken2", "stnkit_broken2_fake", "raise RuntimeError('boom')\n", entry="b2"
    )
    monkeypatch.setattr(cli, "_plugins", None)
    monkeypatch.setenv("STNKIT_PLUGINS", "")
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert "plugin 'b2'" in err and "boom" in err and "Traceback" not in err


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
