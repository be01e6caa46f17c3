"""Every config loads, summarizes, and (for variants not trained elsewhere in the suite)
takes real training steps on the tiny demo corpus."""

import glob
import json
import os

import pytest
from test_train import _cli

from conftest import ROOT

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))

# Seed-size parameter counts (MISSION.md facts, or this library's measured seed-size models).
SEED_PARAMS = {
  "basic_vae.py": 5_488_032,
  "conv_vae.py": 63_555_809,
  "beta_vae.py": 63_555_809,
  "cvae.py": 68_839_777,
  "puzzle_vqvae.py": 83_777,
  "spectral_vae.py": 2_482_849,
  "harmonic_vae.py": 46_785_920,
  "vade.py": 5_491_887,
  "multimodal_vae.py": 64_049_889,
}


@pytest.mark.parametrize("name", CONFIGS)
def test_summary_of_every_config(tmp_path, name, capsys):
  """The docstring shows a command, and --mode=summary works without any data."""
  from jaxvae.variants import registry

  text = open(os.path.join(ROOT, "configs", name)).read()
  assert "python -m jaxvae.main --config=configs/" + name in text
  assert _cli(tmp_path, {}, mode="summary", config=name) == 0
  total = json.load(open(tmp_path / "summary.json"))["total_params"]
  if name in SEED_PARAMS:
    assert total == SEED_PARAMS[name]
  config = registry.load_config(os.path.join(ROOT, "configs", name) + ":small")
  for key in ("train.epochs", "train.batch_size", "data.root", "data.layout"):
    parent, leaf = key.split(".")
    assert leaf in config[parent]


SMOKE = {
  "spectral_vae.py:small": {"model.channels": "(4, 4, 8, 8)", "objective.fft_sizes": "(8,)"},
  "harmonic_vae.py:small": {
    "model.hidden": "(16, 8)",
    "model.harmonic": "True",
    "model.latent_dim": "4",
  },
  # Two stages (autoencoder pretraining, GMM fit, joint ELBO) through the one trainer.
  "vade.py:small": {
    "model.hidden": "(16, 8)",
    "model.latent_dim": "4",
    "model.n_clusters": "3",
    "model.pretrain_epochs": "1",
  },
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_variant_trains_on_demo_data(tmp_path, name, tiny_overrides):
  overrides = {k: v for k, v in tiny_overrides.items() if not k.startswith("model.")}
  overrides |= SMOKE[name] | {"train.epochs": "1", "train.image_every_epochs": "0"}
  assert _cli(tmp_path, overrides, config=name) == 0
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  assert all(v == v for k, v in epochs[-1].items() if k.startswith(("train/", "val/")))
  if name.startswith("vade"):
    assert [r["stage"] for r in epochs] == ["pretrain", "joint"]
    assert "train/entropy" in epochs[-1] and "train/entropy" not in epochs[0]
