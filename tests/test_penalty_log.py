"""The logged training loss is the task loss; the regularizer penalty is stored beside it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import stnkit
from stnkit.response import train_on
from stnkit.runner import prepare
from tests.helpers import write_recipe
from tests.test_engine import run


def test_train_on_returns_the_task_loss_and_reports_the_penalty(tmp_path: Path) -> None:
    declared = {"weight_decay": {"kind": "positive", "init": 0.5}}
    built = prepare(write_recipe(tmp_path, hyperparameters=declared))
    parts, space = built.parts, built.parts.space
    batch = next(iter(built.dataset.train_batches(1, torch.Generator())))
    hp = space.batch(space.expand(batch.size).detach(), hnet=None)
    parts.model.train()
    with torch.no_grad():
        output = parts.model(batch.inputs, hp)
        task_loss = float(parts.task.loss(output.prediction, batch.targets))
    assert output.penalty is not None and float(output.penalty) > 0.01
    returned = float(train_on(parts, batch, hp))
    assert returned == pytest.approx(task_loss, rel=1e-6)
    assert parts.last_penalty == pytest.approx(float(output.penalty), rel=1e-6)


def test_the_train_table_stores_loss_and_penalty(tmp_path: Path) -> None:
    result, rec = run(write_recipe(tmp_path, run__log_every=1))
    weight = [s for s in rec.steps if s.phase == "weight"]
    assert all(math.isfinite(s.penalty) and s.penalty > 0 for s in weight)
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    np.testing.assert_allclose(record.train["penalty"], [s.penalty for s in weight])
    np.testing.assert_allclose(record.train["loss"], [s.loss for s in weight])
    assert list(record.table("train"))[:6] == ["step", "epoch", "time", "loss", "penalty", "lr"]
