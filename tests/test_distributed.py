"""Data-parallel runs under torchrun, on the CPU with the gloo backend.

Every torchrun start costs seconds on a small machine, so the multi-process tests share a few
runs of one small ridge recipe and are marked slow; the in-process tests check the pieces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import stnkit
from stnkit import distributed
from stnkit.data import Batch
from stnkit.errors import RecipeError, RunFileError
from stnkit.precision import Precision
from stnkit.runner import validate
from stnkit_tabular.synthetic import make_ridge_problem, save_problem, validation_loss
from tests.helpers import write_recipe
from tests.test_resume import trajectories
from tests.test_ridge import best_closed_form

ROOT = Path(__file__).parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# long enough to be stopped mid-run, short enough to start and finish in seconds
LONG = {
    "train__epochs": 60,
    "run__log_every": 1,
    "store__checkpoint_steps": 2,
    "run__flush_seconds": 0.05,
}
# a script run by torchrun: each rank records what it ended with, so the test can compare ranks
RANK_SCRIPT = """
import json, os, sys
import stnkit
result = stnkit.run(sys.argv[1])
rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump({"final": result.end.final_values, "path": str(result.path), "status": result.status}, f)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(
    nproc: int, *args: str, nnodes: int = 1, node_rank: int = 0, port: int | None = None
) -> list[str]:
    return [
        *TORCHRUN,
        f"--nproc_per_node={nproc}",
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        "--master_addr=127.0.0.1",
        f"--master_port={port or _port()}",
        *args,
    ]


def _run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)


def _ranked_run(folder: Path, nproc: int, recipe: Path) -> list[dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "ranks.py"
    script.write_text(RANK_SCRIPT)
    done = _run(_torchrun(nproc, str(script), str(recipe), str(folder)))
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same recipe run by one process and by two under torchrun."""
    out: dict[str, Any] = {}
    for nproc in (1, 2):
        folder = tmp_path_factory.mktemp(f"world{nproc}")
        out[nproc] = _ranked_run(folder, nproc, write_recipe(folder, **LONG))
    return out


# -- in one process --------------------------------------------------------------------------------


def test_one_process_is_a_world_of_one() -> None:
    world = distributed.world()
    assert (world.rank, world.world_size, world.is_main, world.active) == (0, 1, True, False)
    grad = torch.tensor([1.0, 2.0])
    distributed.average_gradients_([grad, None])  # a no-op outside torchrun
    assert grad.tolist() == [1.0, 2.0]
    assert distributed.mean(torch.tensor(3.5)) == 3.5
    assert distributed.agree(True, False) == (True, False)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_batches_split_into_near_equal_slices_and_eval_parts_cover_the_batch(rank: int) -> None:
    ranks = distributed.Distributed(distributed.World(rank, 3, 0, "gloo"))
    batch = Batch(torch.arange(20).view(10, 2), torch.arange(10), first=True)  # 10 rows for 3 ranks
    bounds = [0, 3, 6, 10]
    part = ranks.shard(batch)
    # a short batch loses no row: the last rank takes the extra one
    assert part.targets.tolist() == list(range(bounds[rank], bounds[rank + 1]))
    assert part.first
    assert ranks.global_rows(part.size) == distributed.Slice(bounds[rank], bounds[rank + 1], 10)
    with distributed.use(ranks):  # what layers and the perturbations see through the context
        assert distributed.global_rows(part.size) == distributed.Slice(bounds[rank], bounds[rank + 1], 10)
    assert distributed.global_rows(part.size) == distributed.Slice(0, part.size, part.size)
    evaluated = ranks.eval_shard(batch)
    assert evaluated is not None
    assert evaluated.targets.tolist() == list(range(bounds[rank], bounds[rank + 1]))


def test_the_perturbation_shard_is_a_slice_of_the_global_draw() -> None:
    from stnkit.hyper.kinds import UnitKind
    from stnkit.hyper.space import HyperSpace

    kinds = {
        "a": UnitKind(UnitKind.Config(init=0.3)),
        "b": UnitKind(UnitKind.Config(init=0.3, per_example=False)),
    }
    whole = HyperSpace(kinds).sample(7, generator=torch.Generator().manual_seed(5))
    parts = []
    for rank in range(3):
        ranks = distributed.Distributed(distributed.World(rank, 3, 0, "gloo"))
        part = ranks.shard(Batch(torch.zeros(7, 1), torch.zeros(7)))
        space = HyperSpace(kinds)
        space.set_generator(torch.Generator().manual_seed(5))
        with distributed.use(ranks):
            parts.append(space.sample(part.size).detach())
    assert [p.shape[0] for p in parts] == [2, 2, 3]
    torch.testing.assert_close(torch.cat(parts), whole.detach())
    assert torch.unique(torch.cat(parts)[:, 1]).numel() == 1  # a per-batch value: one per global batch


def test_fp16_on_the_cpu_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"train\.precision: fp16 needs a CUDA device"):
        validate(write_recipe(tmp_path, train__precision="fp16"))


def test_bf16_runs_under_cpu_autocast_with_fp32_losses(tmp_path: Path) -> None:
    result = stnkit.run(write_recipe(tmp_path, train__precision="bf16"), store=False)
    assert result.status == "completed"
    assert np.isfinite(result.end.best_val_loss)  # type: ignore[arg-type]
    plain = stnkit.run(write_recipe(tmp_path), store=False)
    # bf16 rounds activations to 8 bits: close to fp32, and not equal to it (autocast did act)
    wd16, wd32 = result.end.final_values["weight_decay"], plain.end.final_values["weight_decay"]
    assert wd16 != wd32
    assert abs(wd16 - wd32) < 0.2 * wd32


def test_fp16_scaler_skips_an_overflowing_step_and_lowers_the_scale() -> None:
    precision = Precision("fp16", torch.device("cpu"))
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scale = precision.scalers["weight"].get_scale()  # type: ignore[union-attr]
    precision.scale((weight * torch.tensor([1.0, float("inf"), 1.0])).sum()).backward()
    precision.step(optimizer, [weight], clip=None)
    assert weight.tolist() == [1.0, 1.0, 1.0]  # skipped
    assert precision.scalers["weight"].get_scale() < scale  # type: ignore[union-attr]
    optimizer.zero_grad()
    precision.scale(weight.sum()).backward()
    precision.step(optimizer, [weight], clip=None)
    torch.testing.assert_close(weight.detach(), torch.full((3,), 0.9))  # unscaled gradient 1


# -- under torchrun (gloo) ---------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_toy_ridge_writes_one_run_and_finds_the_best_weight_decay(tmp_path: Path) -> None:
    arrays = make_ridge_problem(seed=7)
    data = save_problem(arrays, tmp_path / "ridge.npz")
    out = tmp_path / "runs"
    args = ["-m", "stnkit", "run", "recipes/toy-ridge.yaml", "--set", f"data.path={data}", "--out", str(out)]
    done = _run(_torchrun(2, *args, "--quiet"))
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out.glob("*.h5"))
    assert len(files) == 1
    assert done.stdout.split() == [str(files[0])]  # rank 0 alone prints
    shown = json.loads(_run([sys.executable, "-m", "stnkit", "show", "--json", str(files[0])]).stdout)
    assert shown["world_size"] == 2 and shown["backend"] == "gloo" and shown["status"] == "completed"
    final = shown["hyperparameters"]["weight_decay"]["final"]
    best_wd, best_loss = best_closed_form(arrays)
    assert validation_loss(arrays, final) / best_loss < 1.05, (final, best_wd)


@pytest.mark.slow
def test_two_ranks_follow_one_process_with_the_same_global_batch(pair: dict[str, Any]) -> None:
    one, two = pair[1], pair[2]
    assert two[0]["final"] == two[1]["final"]  # h identical on both ranks (compared exactly)
    assert two[1]["path"] == "None" and two[0]["path"] != "None"  # rank 0 alone writes
    a, b = trajectories(Path(one[0]["path"])), trajectories(Path(two[0]["path"]))
    for key in ("hyper.step", "train.step"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the same data, slices and perturbation draws: only float reduction order differs
    for key in ("hyper.values", "hyper.scales", "hyper.val_loss", "train.loss", "epochs.val_loss", "test"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert stnkit.open_run(Path(one[0]["path"])).attrs["world_size"] == 1


def _ptb_recipe(folder: Path) -> Path:
    """A tiny LSTM on real PTB whose only randomness is the perturbation draw: the dropouts are
    left undeclared (rate 0), so one and two processes must agree to rounding."""
    recipe = {
        "name": "ptb-tiny",
        "seed": 0,
        "data": {
            "name": "ptb",
            "root": str(ROOT / "recipes" / "data" / "ptb.zip"),
            "batch_size": 4,
            "bptt": 35,
            "eval_batch_size": 5,  # an odd number of streams: the ranks evaluate 3 and 2
            "train_tokens": 4000,
            "valid_tokens": 1000,
        },
        "model": {"name": "stn-lstm", "embedding_size": 16, "hidden_size": 16, "layers": 1},
        "response": {"name": "stn"},
        "hyperparameters": {
            "activation_reg": {"kind": "positive", "init": 0.05, "per_example": False},
            "temporal_activation_reg": {"kind": "positive", "init": 0.05, "per_example": False},
        },
        "train": {
            "epochs": 3,
            "warmup_epochs": 0,
            "optimizer": {"name": "sgd", "lr": 5, "clip": 0.25},
            "hyper_optimizer": {"name": "adam", "lr": 0.05},
        },
        "run": {"log_every": 1},
        "store": {"dir": str(folder / "runs")},
    }
    path = folder / "ptb.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


@pytest.mark.slow
def test_ptb_streams_split_across_two_ranks_follow_one_process(tmp_path: Path) -> None:
    runs = {n: _ranked_run(tmp_path / f"w{n}", n, _ptb_recipe(tmp_path)) for n in (1, 2)}
    assert runs[2][0]["final"] == runs[2][1]["final"]
    a, b = (trajectories(Path(runs[n][0]["path"])) for n in (1, 2))
    assert len(a["hyper.values"]) > 30
    for key in ("hyper.values", "hyper.val_loss", "train.loss", "epochs.val_loss", "test"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_two_agents_with_nnodes_2_on_localhost(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    # One rendezvous in about thirty hung on loopback in testing (both agents waiting, no error);
    # the hung pair is killed and the two agents started once more on a fresh port. A second hang
    # fails the test. (Known flake, under investigation: see the closing note.)
    for attempt in range(2):
        port = _port()
        agents = [
            subprocess.Popen(
                _torchrun(
                    1, "-m", "stnkit", "run", str(recipe), "--quiet", nnodes=2, node_rank=rank, port=port
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
                cwd=ROOT,
                start_new_session=True,
            )
            for rank in (0, 1)
        ]
        try:
            outputs = [agent.communicate(timeout=150) for agent in agents]
            break
        except subprocess.TimeoutExpired:
            for agent in agents:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(agent.pid, signal.SIGKILL)
                agent.communicate()
            if attempt == 1:
                raise
            for stale in (tmp_path / "runs").glob("*.h5*"):
                stale.unlink()
    assert [agent.returncode for agent in agents] == [0, 0], outputs[1][1][-2000:]
    files = list((tmp_path / "runs").glob("*.h5"))
    assert len(files) == 1
    assert stnkit.open_run(files[0]).summary()["world_size"] == 2


def _launch(folder: Path, nproc: int = 2) -> tuple[subprocess.Popen[str], Path]:
    recipe = write_recipe(folder, **LONG)
    agent = subprocess.Popen(
        _torchrun(nproc, "-m", "stnkit", "run", str(recipe), "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = list((folder / "runs").glob("*.h5"))
        try:
            if files and len(stnkit.open_run(files[0]).hyper.get("step", ())) > 5:
                return agent, files[0]
        except RunFileError:
            pass  # still being created

        if agent.poll() is not None:
            raise AssertionError(f"the run exited early: {agent.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    raise AssertionError("the run never got going")


def _worker(agent: subprocess.Popen[str], rank: int) -> int:
    """The pid of the worker of ``rank`` among the agent's children."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == agent.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank}")


def _resume_matches(path: Path, reference: dict[str, np.ndarray]) -> None:
    done = _run(_torchrun(2, "-m", "stnkit", "run", "--resume", str(path), "--quiet"))
    assert done.returncode == 0, done.stderr[-3000:]
    again = trajectories(path)
    for key, value in reference.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)  # exactly where it would be


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_and_resumes_exactly(tmp_path: Path, pair: dict[str, Any]) -> None:
    reference = trajectories(Path(pair[2][0]["path"]))
    agent, path = _launch(tmp_path)
    os.kill(_worker(agent, 1), signal.SIGTERM)
    agent.communicate(timeout=120)
    assert agent.returncode != 0  # the workers exit 130: torchrun reports the failure
    record = stnkit.open_run(path)
    assert record.status == "interrupted"
    assert "stopped by the user" in str(record.attrs["message"])
    # another world size: one line, nothing touched
    other = _run([sys.executable, "-m", "stnkit", "run", "--resume", str(path)])
    assert other.returncode == 2
    assert "trained on 2 process(es)" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert stnkit.open_run(path).status == "interrupted"
    _resume_matches(path, reference)


@pytest.mark.slow
def test_ctrl_c_in_the_terminal_stops_every_rank_cleanly(tmp_path: Path) -> None:
    agent, path = _launch(tmp_path)
    os.killpg(agent.pid, signal.SIGINT)  # the terminal signals the whole job: agent and workers
    _, err = agent.communicate(timeout=120)
    assert agent.returncode != 0
    record = stnkit.open_run(path)
    assert record.status == "interrupted", err[-2000:]
    assert "stopped by the user" in str(record.attrs["message"])
    # torchrun prints its own SignalException traceback; the workers print none
    assert str(ROOT / "stnkit") not in err


@pytest.mark.slow
def test_a_killed_rank_ends_the_others_in_bounded_time_and_the_run_resumes(
    tmp_path: Path, pair: dict[str, Any]
) -> None:
    reference = trajectories(Path(pair[2][0]["path"]))
    agent, path = _launch(tmp_path)
    os.kill(_worker(agent, 1), signal.SIGKILL)
    start = time.monotonic()
    agent.communicate(timeout=120)
    assert agent.returncode != 0
    assert time.monotonic() - start < 60
    assert stnkit.open_run(path).status == "interrupted"
    _resume_matches(path, reference)


DRIFT_SCRIPT = """
import sys
import stnkit
from stnkit import distributed
average = distributed.average_gradients_
distributed.average_weight_gradients_ = lambda params: average(p.grad for p in params)
distributed.average_gradients_ = lambda tensors: None  # a response model that forgot to average h/s
stnkit.run(sys.argv[1])
"""


@pytest.mark.slow
def test_ranks_that_drift_apart_end_the_run_as_failed(tmp_path: Path) -> None:
    script = tmp_path / "drift.py"
    script.write_text(DRIFT_SCRIPT)
    done = _run(_torchrun(2, str(script), str(write_recipe(tmp_path))))
    assert done.returncode != 0
    assert "after epoch 2: h/s differ between rank 0 and rank 1" in done.stderr  # warm-up is epoch 1
    (path,) = (tmp_path / "runs").glob("*.h5")
    assert stnkit.open_run(path).status == "failed"


@pytest.mark.slow
def test_a_batch_that_does_not_divide_is_an_error_before_anything_starts(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__batch_size=15)
    done = _run(_torchrun(2, "-m", "stnkit", "run", str(recipe), "--quiet"))
    assert done.returncode != 0
    assert "data: the training batch of 15 examples does not divide by the world size 2" in done.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.h5"))
