"""`jaxvae.load(workdir)`: a trained audio VAE from Python, on the suite's short run."""

import os

import numpy as np
import pytest

import jaxvae
from jaxvae import api
from jaxvae import errors
from jaxvae.data import dataset
from jaxvae.data import listing
from jaxvae.sampling import interpolate as interpolate_lib


@pytest.fixture(scope="module")
def model(short_run):
  return jaxvae.load(short_run)


def test_load_knows_its_run(model, short_run):
  assert isinstance(model, api.AudioModel) and model.step in (2, 4)  # the best epoch end
  assert model.spec.input_shape == (32, 87) and model.latent_dim == 8
  assert set(model.spec.labels) == {"genre", "language"}
  assert "conv_vae" in repr(model)
  assert jaxvae.load(short_run, which="latest").step == 4
  with pytest.raises(errors.ConfigError, match="which='newest'"):
    jaxvae.load(short_run, which="newest")
  with pytest.raises(errors.ConfigError, match="audio model"):
    model.encode_midi("a.mid")
  with pytest.raises(errors.CheckpointError, match="not a jaxvae workdir"):
    jaxvae.load(os.path.dirname(short_run))


def test_features_from_a_file_are_the_stores(model):
  """The API's features of a file are the feature store's, normalized the same way."""
  config = model.config
  items = listing.list_dataset(config)
  store = dataset.open_store(config, progress=False)
  row = next(
    i for i, e in enumerate(store.manifest["examples"]) if e["clip_id"] == items[0].clip_id
  )
  expected = store.example(row, config.data.normalize)["x"]
  got = model.features(items[0].path)
  assert got.shape == (1, *model.spec.input_shape)
  np.testing.assert_allclose(got[0], expected, atol=1e-5)


def test_encode_decode_sample_interpolate_and_listen(model):
  rng = np.random.default_rng(0)
  wave = (0.3 * np.sin(2 * np.pi * 330 * np.arange(model.sr) / model.sr)).astype(np.float32)
  x = np.concatenate(
    [model.features(wave, sr=model.sr), model.features(wave[::2], sr=model.sr // 2)]
  )
  mu, logvar = model.encode(x)
  assert mu.shape == logvar.shape == (2, 8) and np.isfinite(mu).all()
  np.testing.assert_array_equal(model.reconstruct(x), model.decode(mu))
  samples = model.sample(3, seed=1)
  assert samples.shape == (3, *model.spec.input_shape)
  np.testing.assert_array_equal(samples, model.sample(3, seed=1))
  other = rng.normal(size=model.spec.input_shape).astype(np.float32)
  path = model.interpolate(x[0], other, steps=4)
  assert path.shape == (4, *model.spec.input_shape)
  ends = model.decode(np.stack([mu[0], model.encode(other)[0][0]]))
  np.testing.assert_allclose(path[[0, -1]], ends, atol=1e-5)
  lerp = model.interpolate(x[0], other, steps=3, method="lerp")
  assert lerp.shape == (3, *model.spec.input_shape)
  audio = model.to_audio(model.reconstruct(x[:1]), n_iter=4)
  assert audio.shape == (1, int(model.config.data.seconds * model.sr))


def test_wrong_input_is_one_clear_error(model):
  with pytest.raises(errors.DataError, match="needs its sample rate"):
    model.features(np.zeros(100, np.float32))
  with pytest.raises(errors.ConfigError, match="not conditional"):
    model.sample(2, condition="rock")
  with pytest.raises(errors.DataError, match=r"expected \[B, 8\]"):
    model.decode(np.zeros((2, 5)))
  with pytest.raises(errors.ConfigError, match="slerp"):
    model.interpolate(np.zeros((32, 87)), np.zeros((32, 87)), method="cubic")
  with pytest.raises(errors.ConfigError, match="no clusters"):
    model.cluster(np.zeros((32, 87)))


def test_slerp_keeps_the_norm_between_equal_length_vectors():
  a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  t = np.linspace(0, 1, 5)[:, None]
  out = interpolate_lib.slerp(a, b, t)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(out[[0, -1]], [a, b], atol=1e-6)


_RUN_EXPORTED = """
import json, sys
import numpy as np
from jax import export
out = sys.argv[1]
meta = json.load(open(out + "/export.json"))
enc = export.deserialize(open(out + "/encoder.jax_export", "rb").read())
dec = export.deserialize(open(out + "/decoder.jax_export", "rb").read())
x = np.load(out + "/x.npy")
mu, logvar = enc.call(x)
z = np.load(out + "/z.npy")
np.savez(out + "/got.npz", mu=np.asarray(mu), logvar=np.asarray(logvar), x=np.asarray(dec.call(z)))
assert "jaxvae" not in sys.modules
print(meta["model"], meta["input_shape"])
"""


def test_export_runs_without_jaxvae_and_matches(model, tmp_path):
  import subprocess
  import sys

  from jaxvae.modes import export

  meta = export.write(model, str(tmp_path))
  assert meta["files"] == ["encoder.jax_export", "decoder.jax_export"]
  assert meta["input_shape"] == [32, 87] and meta["normalize"]["stats"] == model.stats
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 32, 87)).astype(np.float32)  # batch 3: not the trained batch size
  z = rng.normal(size=(5, 8)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "z.npy", z)
  proc = subprocess.run(
    [sys.executable, "-c", _RUN_EXPORTED, str(tmp_path)], capture_output=True, text=True
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[0] == "conv_vae"
  got = np.load(tmp_path / "got.npz")
  mu, logvar = model.encode(x)
  np.testing.assert_allclose(got["mu"], mu, rtol=0, atol=1e-6)
  np.testing.assert_allclose(got["logvar"], logvar, rtol=0, atol=1e-6)
  np.testing.assert_allclose(got["x"], model.decode(z), rtol=0, atol=1e-6)


def docs_blocks(keep) -> list[str]:
  """The ```python blocks of docs/API.md for which `keep(block)` holds, in order."""
  text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "API.md")).read()
  blocks = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
  return [b for b in blocks if keep(b)]


def write_clips(folder, sr: int) -> None:
  import soundfile as sf

  t = np.arange(sr) / sr
  for name, freq in (("a.wav", 220.0), ("b.wav", 440.0)):
    sf.write(
      os.path.join(folder, name), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr
    )


def test_the_api_docs_run(short_run, short_overrides, tmp_path, monkeypatch):
  """docs/API.md's audio-VAE and export blocks, on a copy of the short run (the VQ block:
  tests/test_puzzle.py)."""
  import shutil

  from test_train import _cli

  workdir = tmp_path / "runs" / "conv_small"
  shutil.copytree(short_run, workdir)
  assert _cli(workdir, short_overrides, mode="export") == 0
  write_clips(tmp_path, 22050)
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  blocks = docs_blocks(lambda b: "puzzle" not in b and "mt_stage3" not in b)
  assert len(blocks) == 4
  for i, block in enumerate(blocks):
    exec(compile(block, "docs/API.md", "exec"), namespace)  # noqa: S102 - the docs' own code
    if i == 1:
      assert namespace["x"].shape == (2, 32, 87) and namespace["audio"].shape[0] == 2
      np.testing.assert_array_equal(namespace["recon"], namespace["same"])
      assert namespace["path"].shape == (5, 32, 87)
  assert namespace["moved"].shape == (1, 32, 87) and namespace["v"].shape == (8,)
  assert np.asarray(namespace["x"]).shape == (3, 32, 87)  # the export block's decoder output


def test_a_genre_vector_moves_clips_to_the_other_genre(model):
  """Attribute vectors: the latents of one genre's clips, moved along genre:A->B, are nearest
  to B's mean training latent in most cases (far more often than before the move)."""
  from jaxvae.data import dataset

  store = dataset.open_store(model.config, progress=False)
  values = store.label_values["genre"]
  ids = store.label_array("genre")
  rows = store.indices(augmented=False)
  moved, before, total = 0, 0, 0
  for a, b in ((values[0], values[1]), (values[1], values[2]), (values[2], values[0])):
    x = np.stack(
      [store.example(int(j), model.config.data.normalize)["x"] for j in rows if values[ids[j]] == a]
    )
    mu, _ = model.encode(x)
    before += model.nearest_label_of_latent(mu, "genre").count(b)
    shifted = mu + model.attribute_vector("genre", a, b)
    moved += model.nearest_label_of_latent(shifted, "genre").count(b)
    total += len(x)
    np.testing.assert_allclose(  # apply_attribute decodes exactly that latent
      model.apply_attribute(x[:2], "genre", a, b), model.decode(shifted[:2]), atol=1e-6
    )
  assert moved / total > 0.5 and moved > 2 * before, (moved, before, total)
  with pytest.raises(errors.ConfigError, match="not a value of label 'genre'"):
    model.attribute_vector("genre", "jazz", values[0])


def test_generate_mode_interpolates_audio_and_moves_along_attributes(
  short_run, short_overrides, tmp_path, capsys
):
  import json
  import shutil

  from test_train import _cli

  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  write_clips(tmp_path, 22050)
  a, b = tmp_path / "a.wav", tmp_path / "b.wav"
  assert _cli(workdir, short_overrides, mode="generate", extra=[f"--interpolate={a},{b}"]) == 0
  record = json.load(open(workdir / "generate" / "interp.json"))
  assert record["steps"] == 5 and len(record["files"]) == 5
  assert os.path.exists(record["files"][-1] + ".wav") and (workdir / "generate/interp.png").exists()
  extra = ["--attribute=genre:pop->rock", f"--input={a}", "--strength=1.5"]
  assert _cli(workdir, short_overrides, mode="generate", extra=extra) == 0
  record = json.load(open(workdir / "generate" / "attr.json"))
  assert record["to"] == "rock" and record["strength"] == 1.5
  assert {"nearest_before", "nearest_moved", "nearest_decoded"} <= set(record)
  capsys.readouterr()
  assert _cli(workdir, short_overrides, mode="generate", extra=["--attribute=genre:pop"]) == 1
  assert "expected label:from->to" in capsys.readouterr().err


def test_multimodal_export_takes_lyrics(tiny_overrides, tmp_path):
  """The multimodal VAE's encoder reads lyrics embeddings (a NaN row: no lyrics) in the API
  and in its export; its lyrics decoder is exported too (an initialized model: no training
  needed to check that the exported functions compute what the API does)."""
  from jax import export as jax_export

  from conftest import load_config
  from jaxvae.data.spec import DataSpec
  from jaxvae.modes import export
  from jaxvae.training import builder

  config = load_config("multimodal_vae.py:small", tiny_overrides)
  spec = DataSpec((32, 87), {"genre": ("a", "b"), "language": ("en", "es")}, lyrics_dim=12)
  compiled = builder.build(config, spec, spec.example_batch(8), 1, 1)
  stats = {"mean": 0.0, "std": 1.0}
  model = api.AudioModel(config, compiled.model, compiled.state, spec, stats, str(tmp_path))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 32, 87)).astype(np.float32)
  lyrics = rng.normal(size=(3, 12)).astype(np.float32)
  lyrics[2] = np.nan  # the third clip has no lyrics
  mu, _ = model.encode(x, lyrics=lyrics)
  alone, _ = model.encode(x)
  assert not np.allclose(mu[:2], alone[:2]) and np.allclose(mu[2], alone[2], atol=1e-6)
  with pytest.raises(errors.DataError, match=r"expected embeddings \[3, 12\]"):
    model.encode(x, lyrics=lyrics[:, :5])

  meta = export.write(model, str(tmp_path))
  assert meta["files"] == ["encoder.jax_export", "decoder.jax_export", "lyrics_decoder.jax_export"]
  names = [i["name"] for i in meta["functions"]["encoder"]["inputs"]]
  assert names == ["x", "lyrics", "lyrics_mask"] and meta["lyrics_dim"] == 12

  def load(name):
    return jax_export.deserialize((tmp_path / f"{name}.jax_export").read_bytes())

  mask = np.array([1, 1, 0], np.float32)
  got_mu, _ = load("encoder").call(x, np.nan_to_num(lyrics), mask)
  np.testing.assert_allclose(got_mu, mu, atol=1e-5)
  np.testing.assert_allclose(load("lyrics_decoder").call(mu), model.decode_lyrics(mu), atol=1e-5)
  np.testing.assert_allclose(load("decoder").call(mu), model.decode(mu), atol=1e-5)


def test_onnx_export_is_checked_against_jax(model, tmp_path):
  """`--onnx` (optional jax2onnx + onnxruntime): the conv VAE's encoder converts and runs in
  onnxruntime within 1e-4 of JAX at a batch size it was not checked with; its decoder's
  resize does not convert and is named, with its StableHLO artifact still written."""
  pytest.importorskip("jax2onnx")
  onnxruntime = pytest.importorskip("onnxruntime")
  from jaxvae.modes import export

  meta = export.write(model, str(tmp_path), onnx=True)
  assert meta["onnx"]["encoder"]["file"] == "encoder.onnx"
  assert meta["onnx"]["encoder"]["max_abs_diff"] <= 1e-4
  assert "error" in meta["onnx"]["decoder"] and not (tmp_path / "decoder.onnx").exists()
  assert (tmp_path / "decoder.jax_export").exists()
  x = np.random.default_rng(1).normal(size=(5, 32, 87)).astype(np.float32)
  session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))
  mu, logvar = session.run(None, {session.get_inputs()[0].name: x})
  want_mu, want_logvar = model.encode(x)
  np.testing.assert_allclose(mu, want_mu, atol=1e-4)
  np.testing.assert_allclose(logvar, want_logvar, atol=1e-4)


def test_api_speed_tool_times_every_function(model):
  """tools/api_speed.py (the API's figures in BUILD_NOTES.md) on the short run."""
  import sys

  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
  import api_speed

  records = api_speed.measure(model, batches=(2,), repeats=2)
  assert [r["function"] for r in records] == ["encode", "exported encoder", "decode"]
  for r in records:
    assert r["first_s"] > 0 and r["steady_ms"] > 0 and r["examples_per_s"] > 0
  assert "exported encoder" in api_speed.table(records)
