"""The RAVE-style waveform VAE (configs/wave_vae.py): both phases (the encoder frozen in the
adversarial one), a resume across the switch, streaming decode equal to offline decode, its
state constant over a long stream, its eval, and its API."""

import os

import jax
import numpy as np
import pytest
import soundfile as sf
from test_faults import _killed
from test_faults import _train_args
from test_faults import assert_same_checkpoints
from test_train import _cli
from test_train import _params

from jaxvae import errors

SR = 22050


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """Four 1-s clips: harmonic tones and a noisy glide."""
  root = tmp_path_factory.mktemp("wave_clips")
  t = np.arange(SR) / SR
  rng = np.random.default_rng(0)
  for k, f0 in enumerate((220.0, 330.0, 440.0)):
    tone = sum(0.2 / h * np.sin(2 * np.pi * f0 * h * t) for h in range(1, 5))
    sf.write(root / f"tone{k}.wav", (tone + 1e-3 * rng.standard_normal(SR)).astype(np.float32), SR)
  glide = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.02 * rng.standard_normal(SR)
  sf.write(root / "glide.wav", glide.astype(np.float32), SR)
  return str(root)


def _overrides(root, cache_dir, **more):
  return {
    "data.layout": "folder",
    "data.root": root,
    "data.val_fraction": "0.25",
    "data.cache_dir": cache_dir,
    "train.num_devices": "1",
    "train.log_every_steps": "1",
    **more,
  }


@pytest.fixture(scope="module")
def trained(clips, cache_dir, tmp_path_factory):
  """Both phases, 2 epochs each (epochs of 1 step: 4 training pieces of 0.5 s, batch 4)."""
  workdir = tmp_path_factory.mktemp("wave")
  overrides = _overrides(
    clips, cache_dir, **{"wave.representation_epochs": "2", "wave.adversarial_epochs": "2"}
  )
  assert _cli(workdir, overrides, config="wave_vae.py:tiny") == 0
  return str(workdir), overrides


def test_the_adversarial_phase_freezes_the_encoder_and_trains_both_sides(trained):
  workdir, _ = trained
  import orbax.checkpoint as ocp

  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  steps = sorted(mgr.all_steps())
  restore = lambda s: mgr.restore(s, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
  at_switch, end = restore(2)["state"]["params"], restore(steps[-1])["state"]["params"]
  mgr.close()
  same = lambda a, b: all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  assert steps[-1] == 4
  assert same(at_switch["generator"]["encoder"], end["generator"]["encoder"])
  assert not same(at_switch["generator"]["decoder"], end["generator"]["decoder"])
  assert not same(at_switch["discriminator"], end["discriminator"])
  rows = [r for r in open(os.path.join(workdir, "metrics.jsonl")) if '"kind": "epoch"' in r]
  assert '"stage": "representation"' in rows[0] and '"train/loss_d"' in rows[-1]
  # The first epoch's report: the mel of clips and reconstructions, and both as audio.
  report = os.path.join(workdir, "reports", "epoch_0001")
  assert os.path.getsize(os.path.join(report, "reconstructions.png")) > 1000
  for name in ("original", "reconstruction"):
    y, sr = sf.read(os.path.join(report, f"{name}.wav"))
    assert sr == SR and len(y) == SR // 2 and np.abs(y).max() > 0


def test_a_resume_across_the_phase_switch_is_bitwise(clips, cache_dir, tmp_path, trained):
  """Killed with step 3's checkpoint in flight (the first adversarial step after the switch
  at step 2), the same command resumes and ends bitwise as the uninterrupted run."""
  reference, overrides = trained
  resumed = tmp_path / "resumed"
  _killed(_train_args(resumed, overrides, "wave_vae.py:tiny"), "checkpoint.issued", 3)
  assert _cli(resumed, overrides, config="wave_vae.py:tiny") == 0
  assert_same_checkpoints(str(resumed), reference)
  assert _params(str(resumed), "checkpoints")[0] == 4


def test_streaming_decode_equals_offline_decode(trained):
  """Chunks of 1, 3 and 8 latent frames (24 frames: the last chunk of 3 and 8 is whole)."""
  import jaxvae

  model = jaxvae.load(trained[0])
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 24, model.cfg.latent_dim)))
  offline = model.decode(z)
  lag = model.latency
  for chunk in (1, 3, 8):
    streamed = np.concatenate(list(model.stream_decode(z, chunk)), axis=1)
    assert streamed.shape == offline.shape == (2, 24 * model.hop)
    np.testing.assert_allclose(streamed[:, lag:], offline[:, :-lag], atol=1e-5, err_msg=chunk)


def test_streaming_encode_equals_offline_encode_of_the_delayed_input(trained):
  """Chunks of 1, 3 and 8 latent frames of samples (24 frames): the causal PQMF analysis
  and the cached encoder give `encode` of the input with `latency` zeros in front; a ragged
  chunk is refused in one line."""
  import jaxvae

  model = jaxvae.load(trained[0])
  rng = np.random.default_rng(0)
  y = (0.1 * rng.standard_normal((2, 24 * model.hop))).astype(np.float32)
  delayed = np.pad(y, ((0, 0), (model.latency, 0)))
  offline = model.encode(delayed)[:, :24]
  for chunk in (1, 3, 8):
    streamed = np.concatenate(list(model.stream_encode(y, chunk)), axis=1)
    assert streamed.shape == offline.shape == (2, 24, model.cfg.latent_dim)
    np.testing.assert_allclose(streamed, offline, atol=1e-5, err_msg=chunk)
  cache = model.init_encode_stream(2)
  with pytest.raises(errors.DataError, match=f"whole latent frames of {model.hop} samples"):
    model.stream_encode_step(y[:, : model.hop + 1], cache)


def test_a_ten_minute_stream_keeps_its_state_the_same_size(trained):
  """Decoding and encoding: every state array keeps its shape and dtype."""
  import jaxvae

  model = jaxvae.load(trained[0])
  chunk = 16384  # latent frames a call
  calls = int(np.ceil(600 * model.sr / model.hop / chunk))
  cache = model.init_stream(1)
  sizes = lambda c: [(x.shape, x.dtype) for x in jax.tree.leaves(c)]
  first = sizes(cache)
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (1, chunk, model.cfg.latent_dim)))
  total = 0
  for _ in range(calls):
    out, cache = model.stream_step(z, cache)
    total += out.shape[1]
    assert sizes(cache) == first
  assert total / model.sr >= 600 and np.isfinite(out).all()
  assert int(cache["position"]) == calls * chunk * model.hop // model.cfg.bands
  # The encoder's stream over the same ten minutes of samples.
  cache = model.init_encode_stream(1)
  first = sizes(cache)
  y = np.zeros((1, chunk * model.hop), np.float32)
  for _ in range(calls):
    mu, cache = model.stream_encode_step(y, cache)
    assert sizes(cache) == first and mu.shape == (1, chunk, model.cfg.latent_dim)


def test_eval_measures_reconstructions_prior_samples_and_streaming(trained, capsys):
  workdir, overrides = trained
  assert _cli(workdir, overrides, mode="eval", config="wave_vae.py:tiny") == 0
  import json

  metrics = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
  rec = metrics["reconstruction"]
  for key in ("stft_distance", "spectral_convergence", "mel_l1_db", "si_sdr_db", "frechet"):
    assert np.isfinite(rec[key]), key
  assert np.isfinite(metrics["prior"]["frechet"])
  assert metrics["stream"]["real_time_factor_batch1"] > 0
  assert metrics["stream"]["encode_real_time_factor_batch1"] > 0
  assert metrics["latent_frames_per_second"] == pytest.approx(SR / 16, rel=1e-3)
  assert "streaming decode" in capsys.readouterr().out


def test_the_api_encodes_decodes_and_refuses_bad_input_in_one_line(
  trained, clips, cache_dir, tmp_path
):
  import jaxvae

  model = jaxvae.load(trained[0])
  y = np.zeros((2, 1000), np.float32)
  z = model.encode(y)
  assert z.shape == (2, -(-1000 // model.hop), model.cfg.latent_dim)
  assert model.reconstruct(y).shape == (2, 1000)
  assert model.sample(2, 5).shape == (2, 5 * model.hop)
  # Interpolation between two waveforms, and to_audio of what the model makes (waveforms).
  rng = np.random.default_rng(3)
  a, b = (0.1 * rng.standard_normal(n).astype(np.float32) for n in (3 * model.hop, 4 * model.hop))
  path = model.interpolate(a, b, steps=4)
  assert path.shape == (4, 3 * model.hop)
  np.testing.assert_allclose(path[0], model.reconstruct(a[None])[0], atol=1e-5)
  np.testing.assert_allclose(path[-1], model.reconstruct(b[None, : 3 * model.hop])[0], atol=1e-5)
  np.testing.assert_array_equal(model.to_audio(path), path)
  with pytest.raises(errors.ConfigError, match="'slerp' or 'lerp'"):
    model.interpolate(a, b, method="cubic")
  with pytest.raises(errors.DataError, match="one waveform each, got 2 and 1 rows"):
    model.interpolate(np.stack([a, a]), b)
  with pytest.raises(errors.ConfigError, match=r"n=0: expected an integer >= 1"):
    model.sample(0, 5)
  with pytest.raises(errors.ConfigError, match=r"chunk=0: expected an integer >= 1"):
    next(model.stream_encode(a, chunk=0))
  with pytest.raises(errors.DataError, match="a chunk of 2 waveform.s. for a stream state of 1"):
    model.stream_step(np.zeros((2, 1, model.cfg.latent_dim), np.float32), model.init_stream(1))
  with pytest.raises(errors.DataError, match="NaN"):
    model.encode(np.full((1, 64), np.nan, np.float32))
  with pytest.raises(errors.DataError, match=r"expected \[B, frames, 4\]"):
    model.decode(np.zeros((1, 3, 5), np.float32))
  with pytest.raises(errors.ConfigError, match="makes waveforms itself"):
    jaxvae.load(trained[0], vocoder=trained[0])
  # A non-causal model (trained with the MMD regularizer) decodes offline and refuses to
  # stream, in one line.
  offline = tmp_path / "offline"
  overrides = _overrides(
    clips,
    cache_dir,
    **{"model.causal": "False", "wave.adversarial_epochs": "0", "wave.regularizer": "mmd"},
  )
  assert _cli(offline, overrides, config="wave_vae.py:tiny") == 0
  rows = [r for r in open(offline / "metrics.jsonl") if '"kind": "epoch"' in r]
  assert '"train/mmd"' in rows[-1] and '"train/kl"' not in rows[-1]
  flat = jaxvae.load(str(offline))
  assert flat.decode(z).shape == (2, z.shape[1] * flat.hop)
  with pytest.raises(errors.ConfigError, match="cannot stream"):
    next(flat.stream_decode(z))


def test_generate_writes_prior_samples_and_an_interpolation(trained, clips):
  """`--mode=generate` on a waveform VAE: prior samples of generate.seconds, and with
  --interpolate two files' path, as WAVs; a mel-only flag is refused in one line."""
  import json

  workdir, overrides = trained
  more = dict(overrides, **{"generate.seconds": "0.25"})
  assert (
    _cli(workdir, more, mode="generate", config="wave_vae.py:tiny", extra=["--num_samples=3"]) == 0
  )
  record = json.load(open(os.path.join(workdir, "generate", "prior.json")))
  assert len(record["files"]) == 3
  y, sr = sf.read(record["files"][0])
  assert sr == SR and abs(len(y) - 0.25 * SR) < 64
  pair = f"{clips}/tone0.wav,{clips}/glide.wav"
  assert (
    _cli(workdir, more, mode="generate", config="wave_vae.py:tiny", extra=[f"--interpolate={pair}"])
    == 0
  )
  record = json.load(open(os.path.join(workdir, "generate", "interp.json")))
  assert len(record["files"]) == record["steps"] == 5
  assert _cli(workdir, more, mode="generate", config="wave_vae.py:tiny", extra=["--prior=gmm"]) == 1


def test_export_writes_a_streaming_step_that_runs_without_jaxvae(trained):
  import json

  from jax import export

  import jaxvae

  workdir, overrides = trained
  assert _cli(workdir, overrides, mode="export", config="wave_vae.py:tiny") == 0
  folder = os.path.join(workdir, "export")
  meta = json.load(open(os.path.join(folder, "export.json")))
  assert meta["kind"] == "wave_vae" and meta["stream"]["chunk_frames"] == 1
  names = [s["name"] for s in meta["stream"]["state"]]
  assert names[-2:] == ["position", "pqmf"] and names[0].startswith("convs/")  # sorted keys
  assert meta["functions"]["stream_step"]["inputs"][0]["name"] == "z"
  load = lambda name: export.deserialize(open(os.path.join(folder, name), "rb").read())
  step, decoder = load("stream_step.jax_export"), load("decoder.jax_export")
  model = jaxvae.load(workdir)
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (2, meta["frames"], meta["latent_dim"])))
  state = [
    np.zeros([2 if d == "b" else d for d in s["shape"]], s["dtype"])
    for s in meta["stream"]["state"]
  ]
  outs = []
  for t in range(z.shape[1]):
    out, *state = step.call(z[:, t : t + 1], *state)
    outs.append(np.asarray(out))
  streamed = np.concatenate(outs, axis=1)
  lag = meta["stream"]["latency_samples"]
  offline = np.asarray(decoder.call(z))
  np.testing.assert_allclose(streamed[:, lag:], offline[:, :-lag], atol=1e-5)
  np.testing.assert_allclose(offline, model.decode(z), atol=1e-5)
  # The encoder's streaming step, one latent frame of samples a call, from zero state.
  encode_step = load("stream_encode_step.jax_export")
  assert meta["stream_encode"]["state"][-1]["name"] == "pqmf"
  y = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (2, 6 * meta["hop"]))) * 0.1
  state = [
    np.zeros([2 if d == "b" else d for d in s["shape"]], s["dtype"])
    for s in meta["stream_encode"]["state"]
  ]
  mus = []
  for t in range(0, y.shape[1], meta["hop"]):
    mu, *state = encode_step.call(y[:, t : t + meta["hop"]], *state)
    mus.append(np.asarray(mu))
  expected = np.concatenate(list(model.stream_encode(y, 2)), axis=1)
  np.testing.assert_allclose(np.concatenate(mus, axis=1), expected, atol=1e-5)


def test_a_codec_decodes_at_every_bitrate_streams_and_exports(clips, cache_dir, tmp_path, capsys):
  """model.bottleneck=rvq: residual codes with quantizer dropout; the codes of the first k
  codebooks decode (eval's bitrate table), stream, and export as codes in and out."""
  import json

  from jax import export

  import jaxvae

  workdir = tmp_path / "codec"
  overrides = _overrides(
    clips,
    cache_dir,
    **{
      "model.bottleneck": "rvq",
      "model.num_quantizers": "4",
      "model.num_codes": "16",
      "wave.adversarial_epochs": "0",
      "wave.representation_epochs": "2",
    },
  )
  assert _cli(workdir, overrides, config="wave_vae.py:tiny") == 0
  model = jaxvae.load(str(workdir))
  assert model.is_codec
  y = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 20 * model.hop))) * 0.1
  codes = model.encode_codes(y)
  assert codes.shape == (2, 20, 4) and codes.min() >= 0 and codes.max() < 16
  two = model.encode_codes(y, n_quantizers=2)
  assert (two[..., 2:] == -1).all() and (two[..., :2] == codes[..., :2]).all()
  assert not np.allclose(model.decode_codes(two), model.decode_codes(codes))
  streamed = np.concatenate(list(model.stream_decode(model.lookup(codes), 3)), axis=1)
  lag = model.latency
  np.testing.assert_allclose(streamed[:, lag:], model.decode_codes(codes)[:, :-lag], atol=1e-5)
  with pytest.raises(errors.ConfigError, match="no prior"):
    model.sample(1, 4)
  with pytest.raises(errors.DataError, match="the model has 4 codebooks"):
    model.encode_codes(y, n_quantizers=5)
  assert _cli(workdir, overrides, mode="eval", config="wave_vae.py:tiny") == 0
  metrics = json.load(open(workdir / "eval" / "metrics.json"))
  assert [r["codebooks"] for r in metrics["bitrates"]] == [1, 2, 4]
  assert [r["kbps"] for r in metrics["bitrates"]] == pytest.approx(
    [k * 4 * SR / 16 / 1000 for k in (1, 2, 4)], abs=1e-3
  )
  assert len(metrics["codes"]["levels"]) == 4 and "prior" not in metrics
  assert os.path.getsize(metrics["bitrates_png"]) > 1000
  assert "codebooks (" in capsys.readouterr().out
  assert _cli(workdir, overrides, mode="export", config="wave_vae.py:tiny") == 0
  folder = workdir / "export"
  meta = json.load(open(folder / "export.json"))
  assert (
    meta["bottleneck"] == "rvq" and meta["functions"]["decoder"]["inputs"][0]["name"] == "codes"
  )
  load = lambda name: export.deserialize(open(folder / name, "rb").read())
  clip = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, meta["frames"] * model.hop)))
  exported_codes = np.asarray(load("encoder.jax_export").call(clip))
  np.testing.assert_array_equal(exported_codes, model.encode_codes(clip))
  np.testing.assert_allclose(
    load("decoder.jax_export").call(exported_codes), model.decode_codes(exported_codes), atol=1e-5
  )
  # The streaming encoder gives codes: those of the clip `latency` samples late.
  step = load("stream_encode_step.jax_export")
  state = [
    np.zeros([2 if d == "b" else d for d in s["shape"]], s["dtype"])
    for s in meta["stream_encode"]["state"]
  ]
  codes = []
  for t in range(0, 4 * model.hop, model.hop):
    c, *state = step.call(clip[:, t : t + model.hop], *state)
    codes.append(np.asarray(c))
  late = model.encode_codes(np.pad(clip, ((0, 0), (model.latency, 0))))[:, :4]
  np.testing.assert_array_equal(np.concatenate(codes, axis=1), late)


def test_a_gaussian_model_has_no_codes(trained):
  import jaxvae

  model = jaxvae.load(trained[0])
  with pytest.raises(errors.ConfigError, match="codes need a codec"):
    model.encode_codes(np.zeros((1, 64), np.float32))


def test_the_mmd_regularizer_tells_the_prior_from_a_shifted_latent():
  """(A run with it: the API test's non-causal model.)"""
  from jaxvae.losses import divergence

  key = jax.random.PRNGKey(0)
  normal = jax.random.normal(jax.random.PRNGKey(1), (512, 8))
  assert abs(float(divergence.mmd_to_normal(normal, key))) < 0.01
  assert float(divergence.mmd_to_normal(normal + 2.0, key)) > 0.2


def test_the_two_sided_step_refuses_float16_and_an_unknown_gan_loss_in_one_line():
  from conftest import load_config

  with pytest.raises(errors.ConfigError, match="'dtype' is 'float16'"):
    load_config("wave_vae.py:tiny", {"dtype": "float16"})
  with pytest.raises(errors.ConfigError, match="'objective.gan_loss' is 'lsgan'; expected one of"):
    load_config("wave_vae.py:tiny", {"objective.gan_loss": "lsgan"})
