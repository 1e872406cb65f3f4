"""``recipes/ptb-transformer.yaml``: a plain torch Transformer LM, converted, tunes its dropouts
and weight decay on the shipped PTB slice; the model file knows nothing of stnkit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import stnkit

REPO = Path(__file__).parents[1]
RECIPE = REPO / "recipes" / "ptb-transformer.yaml"
MODEL_FILE = REPO / "examples" / "transformer_lm.py"
TUNED = ("embedding_dropout", "attn_dropout", "residual_dropout", "weight_decay")

#: the recipe at a size that runs in seconds: a few dozen steps, a one-layer 16-wide model
TINY = [
    f"data.root={REPO / 'recipes' / 'data' / 'ptb.zip'}",
    "data.train_tokens=3000",
    "data.valid_tokens=600",
    "data.test_tokens=600",
    "data.batch_size=8",
    "data.bptt=12",
    "model.args={vocab_size: 10000, d_model: 16, heads: 2, layers: 1, feedforward: 32, max_length: 16}",
    "train.epochs=3",
    "train.hyper_optimizer.lr=0.1",
    "store.checkpoints=false",
]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_the_model_file_imports_nothing_from_stnkit() -> None:
    imported = _imported_modules(MODEL_FILE)
    assert "torch" in imported  # the parse sees the file's imports at all
    assert not [name for name in imported if name.split(".")[0] == "stnkit" or name.startswith(".")]
    # nor indirectly: importing it loads no stnkit module
    probe = (
        "import sys, examples.transformer_lm; "
        "sys.exit(any(m == 'stnkit' or m.startswith('stnkit') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, timeout=300).returncode == 0


def test_the_plain_model_gives_next_token_logits_for_ptb_batches() -> None:
    from examples.transformer_lm import TransformerLM

    model = TransformerLM(vocab_size=50, d_model=16, heads=2, layers=1, feedforward=32, max_length=8)
    tokens = torch.randint(0, 50, (3, 7))
    logits = model.eval()(tokens)
    assert logits.shape == (3, 7, 50)
    # causal: changing the last token leaves every earlier position's logits as they were
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50
    torch.testing.assert_close(model(changed)[:, :-1], logits[:, :-1])


@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_the_recipe_tunes_every_dropout_and_the_weight_decay(tmp_path: Path, response: str) -> None:
    result = stnkit.run(RECIPE, overrides=[*TINY, f"response={{name: {response}}}"], out_dir=tmp_path)
    assert result.status == "completed"
    assert result.path is not None
    record = stnkit.open_run(result.path)
    for name in TUNED:
        trajectory = record.values(name)
        assert len(trajectory) > 2
        assert np.ptp(trajectory) > 1e-6 * abs(float(trajectory[0])), f"{name} never moved under {response}"
    test = record.summary()["test"]
    assert np.isfinite(test["perplexity"]) and test["perplexity"] > 1
