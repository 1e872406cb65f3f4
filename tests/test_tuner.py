"""``stnkit.Tuner``: a plain torch model and its DataLoaders tuned from Python, through the same
recipe, engine and run file as ``stnkit run``."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import stnkit
from stnkit import killpoints
from stnkit.cli import main
from stnkit.errors import DataError, UsageError
from stnkit.hookspecs import hookimpl
from tests.own_data import blobs, triples
from tests.own_models import PlainMLP
from tests.test_kill_chain import kill_chain


def same_run(reference: Path, candidate: Path) -> list[str]:
    """How ``candidate`` differs from ``reference`` (both made by equal Tuners, in other folders)."""
    left, right = stnkit.open_run(reference).recipe, stnkit.open_run(candidate).recipe
    found = [] if {**left, "store": None} == {**right, "store": None} else ["recipe"]
    return found + kill_chain.differences(reference, candidate, ignore_attrs=frozenset({"recipe"}))


def make_tuner(folder: Path, model: nn.Module | None = None, **changes: Any) -> stnkit.Tuner:
    torch.manual_seed(0)
    train, valid, test = blobs()
    settings: dict[str, Any] = {
        "hyperparameters": {"dropout": 0.1, "weight_decay": 1e-3},
        "train": train,
        "valid": valid,
        "test": test,
        "epochs": 4,
        "options": {"warmup_epochs": 1, "log_every": 1},
        "out": folder,
        "progress": "quiet",
        **changes,
    }
    return stnkit.Tuner(model if model is not None else PlainMLP(out_features=3), **settings)


def test_fit_writes_a_run_file_the_analysis_commands_read(tmp_path: Path) -> None:
    result = make_tuner(tmp_path / "runs").fit()
    assert result.status == "completed" and result.path is not None
    record = stnkit.open_run(result.path)
    assert record.hyperparameters == ("dropout", "weight_decay")
    assert set(record.test) >= {"loss", "accuracy"}
    assert set(result.best_values) == {"dropout", "weight_decay"}
    # the same recipe a YAML user would write: a converted module over the user's loaders
    assert record.recipe["model"]["name"] == "module" and record.recipe["data"]["name"] == "loaders"
    other = make_tuner(tmp_path / "runs", response="stn").fit()
    for command in (["show", str(result.path)], ["compare", str(result.path), str(other.path)]):
        assert main(command) == 0
    assert main(["plot", str(result.path), "--output", str(tmp_path / "plot.png")]) == 0


def test_fit_twice_is_an_error(tmp_path: Path) -> None:
    tuner = make_tuner(tmp_path, epochs=1)
    tuner.fit()
    with pytest.raises(UsageError, match=r"fit\(\) was already called on this Tuner"):
        tuner.fit()


class _CtrlC:
    """Sends this process SIGINT after weight step ``at``, as a user's Ctrl-C would arrive."""

    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl
    def stnkit_step_end(self, run: Any, step: Any) -> None:
        if step.phase == "weight" and step.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_cleanly_and_the_run_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = make_tuner(tmp_path / "reference").fit()
    monkeypatch.setattr(stnkit.Tuner, "_observers", lambda self: [_CtrlC(at=6)])
    stopped = make_tuner(tmp_path / "chain").fit()
    assert stopped.status == "interrupted"
    monkeypatch.undo()
    resumed = make_tuner(tmp_path / "chain").fit(resume=stopped.path)
    assert resumed.status == "completed" and resumed.path == stopped.path
    assert reference.path is not None and resumed.path is not None
    assert same_run(reference.path, resumed.path) == []


def _killed_fit(folder: Path, kill_at: str) -> None:
    torch.set_num_threads(1)
    os.environ[killpoints.VARIABLE] = kill_at
    killpoints._seen.clear()
    make_tuner(folder).fit()
    os._exit(0)


def test_a_fit_killed_mid_epoch_resumes_bit_identically(tmp_path: Path) -> None:
    reference = make_tuner(tmp_path / "reference").fit()
    child = multiprocessing.get_context("fork").Process(
        target=_killed_fit, args=(tmp_path / "chain", "weight-step:7")
    )
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL
    (path,) = (tmp_path / "chain").glob("*.h5")
    assert stnkit.open_run(path).status != "completed"
    resumed = make_tuner(tmp_path / "chain").resume(path)
    assert resumed.status == "completed" and reference.path is not None
    assert same_run(reference.path, path) == []


def test_resume_with_other_settings_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stnkit.Tuner, "_observers", lambda self: [_CtrlC(at=2)])
    stopped = make_tuner(tmp_path).fit()
    monkeypatch.undo()
    assert stopped.path is not None
    with pytest.raises(UsageError, match="other settings than this Tuner's.*train"):
        make_tuner(tmp_path, epochs=5).fit(resume=stopped.path)


def test_the_found_schedule_replays_on_a_fresh_plain_model(tmp_path: Path) -> None:
    result = make_tuner(tmp_path).fit()
    replayed = result.replay(lambda: PlainMLP(out_features=3))
    assert replayed.status == "completed" and replayed.path is not None
    record = stnkit.open_run(replayed.path)
    assert record.metadata["replay"] == "schedule"
    assert record.recipe["response"]["name"] == "fixed"
    assert record.recipe["response"]["schedule"]["values"]["dropout"][0] == pytest.approx(0.1)


# -- the mistakes users make in Python ------------------------------------------------------------


def test_a_loader_yielding_an_unexpected_structure(tmp_path: Path) -> None:
    train, valid = triples()
    with pytest.raises(DataError, match=r"train DataLoader yielded a list of 3 \(a float32 tensor"):
        make_tuner(tmp_path, model=PlainMLP(in_features=4), train=train, valid=valid, test=None).fit()
    assert not list(tmp_path.glob("*.h5"))


def test_a_loss_that_is_not_a_scalar(tmp_path: Path) -> None:
    loss = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(UsageError, match=r"loss CrossEntropyLoss returned a float32 tensor of shape \(16,\)"):
        make_tuner(tmp_path, loss=loss).fit()
    assert not list(tmp_path.glob("*.h5"))


def test_a_users_scalar_loss_is_the_runs_loss(tmp_path: Path) -> None:
    def smooth(prediction: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction, targets, label_smoothing=0.1)

    result = make_tuner(tmp_path, loss=smooth, epochs=2).fit()
    assert result.status == "completed"
    record = stnkit.open_run(result.path)
    assert "accuracy" in record.test  # the task's metrics stay beside the user's loss
    assert record.recipe["data"]["loss"].startswith("stnkit.live:")


def test_a_hyperparameter_consumed_by_nothing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="attn_dropout"):
        make_tuner(tmp_path, hyperparameters={"dropout": 0.1, "attn_dropout": 0.1}).fit()
    assert not list(tmp_path.glob("*.h5"))


def test_a_model_with_another_float_type_than_the_batches(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="parameters are float64 but the batches' inputs are float32"):
        make_tuner(tmp_path, model=PlainMLP(out_features=3).double()).fit()


def test_a_model_on_a_device_that_cannot_train_or_not_the_one_asked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="parameters are on device 'meta'"):
        make_tuner(tmp_path, model=PlainMLP(out_features=3).to("meta"))
    with pytest.raises(UsageError, match="the model is on cpu but device='cuda'"):
        make_tuner(tmp_path, device="cuda")


def test_loaders_and_models_of_the_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="model must be a torch nn.Module"):
        make_tuner(tmp_path, model=lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="train must be a torch DataLoader"):
        make_tuner(tmp_path, train=[(torch.zeros(2, 8), torch.zeros(2))])


def test_a_bare_value_needs_a_name_the_rules_know(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"hyperparameters\['strength'\]: give a declaration"):
        make_tuner(tmp_path, hyperparameters={"strength": 0.1})


def test_dict_batches_with_a_key_mapping(tmp_path: Path) -> None:
    from tests.own_data import blob_dicts

    loaders = blob_dicts()
    result = make_tuner(
        tmp_path,
        train=loaders["train"],
        valid=loaders["valid"],
        test=None,
        inputs="pixels",
        targets="label",
        epochs=2,
    ).fit()
    assert result.status == "completed"


def test_the_result_holds_the_trained_model_and_the_given_one_is_untouched(tmp_path: Path) -> None:
    model = PlainMLP(out_features=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = make_tuner(tmp_path, model=model, epochs=2).fit()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(result.model, PlainMLP) and result.model is not model
    x = torch.randn(5, 8)
    assert result.model.eval()(x).shape == (5, 3)  # usable as the user's class, outside stnkit


def test_the_command_line_says_a_tuner_run_is_resumed_and_replayed_from_python(tmp_path: Path) -> None:
    result = make_tuner(tmp_path, epochs=1).fit()
    # another process: the Tuner's objects live only in the session that made the run
    done = subprocess.run(
        [sys.executable, "-m", "stnkit", "replay", str(result.path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    err = " ".join(done.stderr.split())
    assert "an object of the Python session that made this run (stnkit.Tuner)" in err
    assert "result.replay(model_factory)" in err and "Traceback" not in err


def test_a_mistake_found_before_training_leaves_the_tuner_ready(tmp_path: Path) -> None:
    model = PlainMLP(out_features=3).double()
    tuner = make_tuner(tmp_path, model=model, epochs=1)
    with pytest.raises(UsageError, match="float64"):
        tuner.fit()
    model.float()  # fixed in place: the same Tuner now runs
    assert tuner.fit().status == "completed"


def test_a_model_that_cannot_be_copied(tmp_path: Path) -> None:
    import threading

    model = PlainMLP(out_features=3)
    model.lock = threading.Lock()  # type: ignore[assignment]  # deepcopy cannot copy a lock
    with pytest.raises(UsageError, match=r"the model cannot be copied \(copy.deepcopy failed"):
        make_tuner(tmp_path, model=model).fit()
    assert not list(tmp_path.glob("*.h5"))
