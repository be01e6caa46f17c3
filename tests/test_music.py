"""Seed 001 end to end: MIDI folder -> token store (a broken file counted), progressive
stages 1 -> 2 -> 3 each initialized from the previous workdir, and MIDI generation."""

import json
import os
import shutil

import numpy as np
import pytest

from test_train import _cli

pretty_midi = pytest.importorskip("pretty_midi")

TINY = {"data.midi.seq_len": "48", "data.midi.overlap": "8", "model.d_model": "32",
        "model.num_layers": "1", "model.num_heads": "2", "model.d_ff": "64",
        "model.enc_layers": "1", "model.disc_dim": "16", "model.disc_layers": "1",
        "model.disc_scales": "(1, 2)", "model.latent_regions": "4",
        "model.latent_fine_regions": "8", "train.batch_size": "4", "train.epochs": "1",
        "train.max_steps": "2", "generate.num_tokens": "24", "data.val_fraction": "0.3"}


def _piece(path, seed):
  rng = np.random.default_rng(seed)
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=0)
  t = 0.0
  for _ in range(40):
    d = float(rng.choice([0.25, 0.5]))
    inst.notes.append(pretty_midi.Note(int(rng.integers(50, 80)), int(rng.integers(40, 110)),
                                       t, t + d))
    t += d
  pm.instruments.append(inst)
  pm.write(str(path))


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("midi")
  for style in ("fast", "slow"):
    os.makedirs(root / style)
    for k in range(4):
      _piece(root / style / f"{style}_{k}.mid", hash((style, k)) % 1000)
  (root / "slow" / "broken.mid").write_bytes(b"MThd garbage")
  return str(root)


def test_progressive_stages_and_generation(tmp_path, midi_folder, cache_dir):
  overrides = dict(TINY, **{"data.layout": "folder", "data.root": midi_folder,
                            "data.cache_dir": cache_dir})
  cfg = "music_transformer_vaegan.py:small"
  previous = None
  for stage in (1, 2, 3):
    workdir = tmp_path / f"stage{stage}"
    extra = {"stage": str(stage)} | ({"init_from": str(previous)} if previous else {})
    assert _cli(workdir, overrides | extra, config=cfg) == 0
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    last = [r for r in rows if r.get("kind") == "epoch"][-1]
    assert np.isfinite(last["val/nll"]) and last["val/ppl"] > 1
    if stage >= 2:
      assert "val/kl" in last
    if stage == 3:
      assert "train/loss_d" in last and last["train/grad_norm_g"] > 0
    previous = workdir
  info = json.load(open(tmp_path / "stage1" / "jaxvae_run.json"))["data"]
  assert info["bad_files"] == 1 and info["bad"][0]["clip_id"] == "slow/broken.mid"
  assert _cli(previous, overrides | {"stage": "3"}, mode="generate", config=cfg,
              extra=["--num_samples=2"]) == 0
  out = previous / "generate"
  tokens = np.load(out / "sample_01.npy")
  assert tokens.shape == (25,) and tokens.min() >= 0 and tokens.max() < 774
  pretty_midi.PrettyMIDI(str(out / "sample_00.mid"))  # a readable MIDI file


def test_chorales_corpus_is_offline(tmp_path, cache_dir):
  pytest.importorskip("music21")
  from jaxvae import config_lib
  from jaxvae.data import tokens
  from conftest import ROOT
  config = config_lib.load(os.path.join(ROOT, "configs", "music_transformer_vaegan.py:small"),
                           {"data.midi.chorales": "3", "data.cache_dir": str(tmp_path)})
  store = tokens.build(config, progress=False)
  assert store.features.shape[1] == 128 and len(store.features) >= 3
  assert store.features[0][0] == 1  # START opens the first window of a piece
  shutil.rmtree(tmp_path, ignore_errors=True)
