"""Soak: the multi-stage families killed at random moments through every stage resume bitwise.

Each family trains once uninterrupted; then the same command is SIGKILLed at random fault
points (`JAXVAE_FAULT=<point>:<n>`: a step, a save in flight, a landed save, a logged epoch),
one kill in each stage, and run again until it finishes. Its latest and best checkpoints must
then equal the uninterrupted run's bitwise, and metrics.jsonl must hold each epoch once.

The families: VaDE (autoencoder pretraining, the GMM fit, the joint ELBO), the multimodal
audio + lyrics VAE, and the MIDI Transformer-VAE-GAN's stages 1, 2 and 3, the later ones
started with `init_from` the previous stage's workdir. The soak takes minutes, so it runs
only with JAXVAE_SOAK=1; JAXVAE_SOAK_SEED picks the kill points (default 0), and
JAXVAE_SOAK_ROUNDS repeats it with seeds SEED, SEED+1, ... (default 1). The suite runs one
fixed VaDE chain (a kill in each stage) always.
"""

import json
import os
import random
import sys

import numpy as np
import pytest
from test_faults import _killed
from test_faults import _metrics
from test_faults import assert_same_checkpoints
from test_music import TINY as MIDI_TINY
from test_music import _piece
from test_train import _cli
from test_train import _params

from conftest import load_config
from jaxvae.data import dataset
from jaxvae.data import lyrics as lyrics_store

SOAK = os.environ.get("JAXVAE_SOAK") == "1"
SEED = int(os.environ.get("JAXVAE_SOAK_SEED", "0"))
ROUNDS = int(os.environ.get("JAXVAE_SOAK_ROUNDS", "1"))

# A checkpoint every step: a kill anywhere resumes from the step before it, in every stage.
EVERY_STEP = {"train.checkpoint_every_steps": "1", "train.image_every_epochs": "0"}

# (config, overrides, per-stage epochs): two steps an epoch on the tiny demo corpus.
VADE = (
  "vade.py:small",
  {
    "model.hidden": "(16, 8)",
    "model.latent_dim": "4",
    "model.n_clusters": "3",
    "model.pretrain_epochs": "1",
    "train.epochs": "2",
  },
  (1, 2),
)
# The tiny conv sizes of the test config (its `model.*` keys) fit the multimodal audio branch.
MULTIMODAL = ("multimodal_vae.py:small", {"train.epochs": "2", "eval.plots": ""}, (2,))
MIDI = "music_transformer_vaegan.py:small"


def _audio_overrides(tiny_overrides, config, family_overrides):
  base = dict(tiny_overrides)
  if config.startswith("vade"):
    base = {k: v for k, v in base.items() if not k.startswith("model.")}
  return base | EVERY_STEP | family_overrides


def _with_lyrics(tmp_path, config, overrides):
  """The multimodal VAE reads a lyrics-embedding store: random vectors for the demo clips."""
  if not config.startswith("multimodal"):
    return overrides
  store = dataset.open_store(load_config(config, overrides), progress=False)
  clips = sorted({e["clip_id"] for e in store.manifest["examples"]})
  vectors = np.random.default_rng(0).normal(size=(len(clips), 12)).astype(np.float32)
  path = str(tmp_path / "lyrics")
  lyrics_store.write_embeddings(path, clips, vectors, info={"model": "test", "pooling": "mean"})
  return overrides | {"data.lyrics_embeddings": path}


def _args(config, workdir, overrides):
  return [
    sys.executable,
    "-m",
    "jaxvae.main",
    f"--config=configs/{config}",
    f"--workdir={workdir}",
    "--no_progress",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def _kill_points(rng, stage_steps):
  """One (point, pass) per stage: pass numbers count from the start of the process, which
  (killed and re-run) starts where the previous kill left it, at most one step back."""
  points, done = [], 0
  for steps in stage_steps:
    step = done + rng.randint(1, steps)
    point = rng.choice(["train.step", "checkpoint.issued", "checkpoint.latest", "epoch.logged"])
    points.append((point, step))
    done += steps
  return points


def _chain(config, workdir, overrides, kills):
  """Kills the run at each (point, absolute step) in turn, then lets it finish."""
  resumed = 0
  for point, step in kills:
    if point == "epoch.logged":  # passes are epochs: the epoch that holds `step`
      n = max(1, (step - resumed + 1) // 2)
    else:
      n = max(1, step - resumed)
    _killed(_args(config, workdir, overrides), point, n)
    saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
    resumed = max(saved, default=0)
  assert _cli(workdir, overrides, config=config) == 0


def _same(workdir, reference):
  assert_same_checkpoints(workdir, reference)
  assert _metrics(workdir) == _metrics(reference)
  run_file = json.load(open(os.path.join(workdir, "jaxvae_run.json")))
  assert run_file["config"] == json.load(open(os.path.join(reference, "jaxvae_run.json")))["config"]


def _soak_audio(tmp_path, tiny_overrides, family, seed):
  config, family_overrides, stage_epochs = family
  overrides = _audio_overrides(tiny_overrides, config, family_overrides)
  overrides = _with_lyrics(tmp_path, config, overrides)
  reference = tmp_path / "reference"
  assert _cli(reference, overrides, config=config) == 0
  rng = random.Random(seed)
  killed = tmp_path / f"killed_{seed}"
  _chain(config, killed, overrides, _kill_points(rng, [2 * e for e in stage_epochs]))
  _same(killed, reference)


def test_vade_killed_in_each_stage_resumes_bitwise(tmp_path, tiny_overrides):
  """Always run: a kill mid-pretraining, one with the joint stage's first save in flight."""
  config, family_overrides, _ = VADE
  overrides = _audio_overrides(tiny_overrides, config, family_overrides)
  reference = tmp_path / "reference"
  assert _cli(reference, overrides, config=config) == 0
  killed = tmp_path / "killed"
  _chain(config, killed, overrides, [("train.step", 1), ("checkpoint.issued", 3)])
  _same(killed, reference)


soak = pytest.mark.skipif(not SOAK, reason="the soak runs with JAXVAE_SOAK=1 (minutes)")


@soak
@pytest.mark.parametrize("seed", range(SEED, SEED + ROUNDS))
@pytest.mark.parametrize("family", [VADE, MULTIMODAL], ids=["vade", "multimodal"])
def test_soak_audio_families(tmp_path, tiny_overrides, family, seed):
  _soak_audio(tmp_path, tiny_overrides, family, seed)


@soak
@pytest.mark.parametrize("seed", range(SEED, SEED + ROUNDS))
def test_soak_midi_stages_with_init_from(tmp_path, seed):
  folder = tmp_path / "midi"
  for style in ("fast", "slow"):
    os.makedirs(folder / style)
    for k in range(4):
      _piece(folder / style / f"{style}_{k}.mid", 17 * k + (style == "slow"))
  overrides = dict(
    MIDI_TINY,
    **{"data.layout": "folder", "data.root": str(folder), "data.cache_dir": str(tmp_path / "c")},
  )
  overrides |= EVERY_STEP | {"model.disc_scales": "(1,)"}
  rng = random.Random(seed)
  previous = None
  for stage in (1, 2, 3):
    stage_overrides = overrides | {"stage": str(stage)}
    if previous is not None:
      stage_overrides["init_from"] = str(previous)
    reference = tmp_path / f"stage{stage}_reference"
    assert _cli(reference, stage_overrides, config=MIDI) == 0
    steps = _params(str(reference))[0]
    killed = tmp_path / f"stage{stage}_killed"
    _chain(MIDI, killed, stage_overrides, _kill_points(rng, [steps]))
    _same(killed, reference)
    previous = reference


def test_kill_points_land_in_each_stage():
  points = _kill_points(random.Random(3), [2, 4])
  assert len(points) == 2 and 1 <= points[0][1] <= 2 and 3 <= points[1][1] <= 6
  assert {p for p, _ in points} <= {
    "train.step",
    "checkpoint.issued",
    "checkpoint.latest",
    "epoch.logged",
  }
