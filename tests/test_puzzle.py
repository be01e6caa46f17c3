"""Seed 004 end to end on a tiny Speech Commands folder with a corrupt WAV in it."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from test_train import _cli

WORDS = ("five", "left", "yes")


@pytest.fixture(scope="module")
def speech_commands(tmp_path_factory):
  root = tmp_path_factory.mktemp("speech_commands")
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000
  for w, word in enumerate(WORDS):
    os.makedirs(root / word)
    for k in range(8):
      f0 = 200 * (w + 1) * (1 + 0.05 * k)
      y = 0.5 * np.sin(2 * np.pi * f0 * t) * np.hanning(16000) + 0.01 * rng.standard_normal(16000)
      sf.write(root / word / f"spk{k:02d}_nohash_0.wav", y.astype(np.float32), 16000)
  (root / "five" / "b544d4fd_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
  os.makedirs(root / "_background_noise_")
  sf.write(root / "_background_noise_" / "white.wav", rng.standard_normal(16000) * 0.1, 16000)
  (root / "validation_list.txt").write_text(
    "\n".join(f"{w}/spk07_nohash_0.wav" for w in WORDS) + "\n"
  )
  (root / "testing_list.txt").write_text("left/spk06_nohash_0.wav\n")
  return str(root)


@pytest.fixture(scope="module")
def puzzle_run(tmp_path_factory, speech_commands, cache_dir):
  overrides = {
    "data.root": speech_commands,
    "data.cache_dir": cache_dir,
    "data.n_mels": "32",
    "model.enc_channels": "(4, 8)",
    "model.dec_channels": "(8, 8, 4)",
    "model.code_dim": "8",
    "model.grid": "(6, 6)",
    "train.batch_size": "4",
    "train.num_devices": "1",
    "train.epochs": "2",
    "train.log_every_steps": "2",
  }
  workdir = str(tmp_path_factory.mktemp("puzzle"))
  assert _cli(workdir, overrides, config="puzzle_vqvae.py") == 0
  return workdir, overrides


def test_corrupt_wav_is_counted_and_silenced(puzzle_run):
  workdir, _ = puzzle_run
  info = json.load(open(os.path.join(workdir, "jaxvae_run.json")))["data"]
  assert info["bad_files"] == 1
  assert info["bad"][0]["clip_id"] == "five/b544d4fd_nohash_0.wav"
  assert info["bad"][0]["action"] == "silence"
  assert info["examples"] == 25  # 24 good clips + the silence substitute; noise excluded
  assert info["shape"] == [32, 32]


def test_training_logs_codebook_health(puzzle_run):
  workdir, _ = puzzle_run
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  last = [r for r in rows if r.get("kind") == "epoch"][-1]
  assert 1 <= last["val/codes_used"] <= 10
  assert 1.0 <= last["val/code_perplexity"] <= last["val/codes_used"] + 1e-6
  assert any("val/code_counts" in r for r in rows)


def test_analyze_compares_trained_with_untrained(puzzle_run):
  workdir, overrides = puzzle_run
  assert _cli(workdir, overrides, mode="analyze", config="puzzle_vqvae.py") == 0
  result = json.load(open(os.path.join(workdir, "analysis.json")))
  for key in (
    "recon_mse_untrained",
    "recon_mse_trained",
    "recon_reduction_pct",
    "perplexity",
    "codes_used",
    "codebook_size",
  ):
    assert key in result
  assert result["codebook_size"] == 10
  assert result["recon_reduction_pct"] == pytest.approx(
    100 * (1 - result["recon_mse_trained"] / result["recon_mse_untrained"])
  )
  assert os.path.getsize(result["puzzles"][0]) > 1000
  assert "| Codes used |" in open(os.path.join(workdir, "analysis.md")).read()


def test_python_api_codes_decode_to_the_reconstruction(puzzle_run, speech_commands):
  """jaxvae.load on a VQ run: code grids from a file, decoded back to what the model
  reconstructs, and their usage."""
  import jaxvae
  from jaxvae import api

  workdir, _ = puzzle_run
  model = jaxvae.load(workdir)
  assert isinstance(model, api.VQModel)
  folder = os.path.join(speech_commands, WORDS[1])  # WORDS[0] holds the corrupt file
  path = os.path.join(folder, sorted(os.listdir(folder))[0])
  x = model.features([path, path])
  with pytest.raises(jaxvae.errors.AudioError, match="b544d4fd_nohash_0.wav"):
    model.features(os.path.join(speech_commands, WORDS[0], "b544d4fd_nohash_0.wav"))
  codes = model.encode(x)
  assert codes.shape == (2, 6, 6) and codes.dtype == np.int32
  assert 0 <= codes.min() and codes.max() < 10
  np.testing.assert_allclose(model.decode_codes(codes), model.reconstruct(x), atol=1e-5)
  usage = model.code_usage(x)
  assert usage.shape == (10,) and usage.sum() == 2 * 36
  with pytest.raises(jaxvae.errors.DataError, match="codes must be in"):
    model.decode_codes(np.full((6, 6), 10))


def test_audio_latent_tools_refuse_a_code_grid_model(puzzle_run, capsys):
  workdir, overrides = puzzle_run
  extra = ["--interpolate=a.wav,b.wav"]
  assert _cli(workdir, overrides, mode="generate", config="puzzle_vqvae.py", extra=extra) == 1
  assert "need a Gaussian latent space" in capsys.readouterr().err


def test_the_api_docs_vq_block_runs(puzzle_run, tmp_path, monkeypatch):
  import shutil

  from test_api import docs_blocks
  from test_api import write_clips

  workdir, _ = puzzle_run
  shutil.copytree(workdir, tmp_path / "runs" / "puzzle_small")
  write_clips(tmp_path, 16000)
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  (block,) = docs_blocks(lambda b: "puzzle" in b)
  exec("import numpy as np\nimport jaxvae\n" + block, namespace)  # noqa: S102 - the docs' code
  assert namespace["codes"].shape == (1, 6, 6) and namespace["usage"].sum() == 2 * 36


def test_residual_codes_train_and_decode_at_every_depth(puzzle_run, tmp_path):
  """The puzzle VQ-VAE with a residual quantizer (3 levels, quantizer dropout, k-means start):
  trains, reports codebook health per level, and its codes decode to its reconstruction, at a
  lower bitrate too (later levels -1)."""
  import jaxvae

  _, overrides = puzzle_run
  workdir = tmp_path / "rvq"
  rvq = {
    "model.quantizer": "rvq",
    "model.num_quantizers": "3",
    "model.quantizer_dropout": "0.5",
    "model.kmeans_init": "True",
  }
  assert _cli(workdir, dict(overrides, **rvq), config="puzzle_vqvae.py") == 0
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  last = [r for r in rows if r.get("kind") == "epoch"][-1]
  model = jaxvae.load(str(workdir))
  assert model.module.codebook_size == 10 and 1 <= last["val/codes_used"] <= 10
  x = model.features(np.zeros((2, 16000), np.float32) + 0.01, sr=16000)
  codes = model.encode(x)
  np.testing.assert_allclose(model.decode_codes(codes), model.reconstruct(x), atol=1e-5)
  assert codes.shape == (2, 6, 6, 3)
  assert all(f"val/level{i}_codes_used" in last for i in range(3))
  assert 1.0 <= last["val/levels_used"] <= 3.0
  fewer = np.where(np.arange(3) >= 1, -1, codes)  # the first level only
  assert not np.allclose(model.decode_codes(fewer), model.decode_codes(codes))
  assert model.code_usage(x).shape == (3, 10)
  with pytest.raises(jaxvae.errors.DataError, match="codes must be in"):
    model.decode_codes(np.full(codes.shape[1:], 10))


@pytest.mark.parametrize(
  "quantizer",
  [
    {"model.quantizer": "fsq", "model.fsq_levels": "(5, 4, 3)"},
    {"model.quantizer": "lfq", "model.code_dim": "6"},
  ],
  ids=["fsq", "lfq"],
)
def test_scalar_quantizer_codes_decode_to_the_reconstruction(puzzle_run, quantizer):
  """FSQ and LFQ in the puzzle model (the training step is the one rvq's run above takes;
  tests/test_quantizers.py checks FSQ's rounding and LFQ's entropy terms): an initialized
  model's codes have the product codebook's range and decode to its reconstruction."""
  from conftest import load_config
  from jaxvae import api
  from jaxvae import errors
  from jaxvae.data import dataset
  from jaxvae.training import builder

  _, overrides = puzzle_run
  config = load_config("puzzle_vqvae.py", dict(overrides, **quantizer))
  store = dataset.open_store(config, progress=False)
  spec = dataset.spec_of(store)
  compiled = builder.build(config, spec, spec.example_batch(2), steps_per_epoch=1, total_steps=1)
  model = api.VQModel(config, compiled.model, compiled.state, spec, store.manifest["stats"], "-")
  size = {"fsq": 60, "lfq": 64}[quantizer["model.quantizer"]]
  assert model.module.codebook_size == size
  x = model.features(np.zeros((2, 16000), np.float32) + 0.01, sr=16000)
  codes = model.encode(x)
  assert codes.shape == (2, 6, 6) and 0 <= codes.min() and codes.max() < size
  np.testing.assert_allclose(model.decode_codes(codes), model.reconstruct(x), atol=1e-5)
  with pytest.raises(errors.DataError, match="codes must be in"):
    model.decode_codes(np.full(codes.shape[1:], size))


def test_a_bad_quantizer_setting_is_one_line(capsys, puzzle_run, tmp_path):
  _, overrides = puzzle_run
  bad = dict(overrides, **{"model.quantizer": "fsq", "model.kmeans_init": "True"})
  assert _cli(tmp_path, bad, config="puzzle_vqvae.py") == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [
    "error: config key 'model.kmeans_init' is True with model.quantizer 'fsq'; k-means fills "
    "the codebooks of 'vq' and 'rvq' (without factorized codes)"
  ]
