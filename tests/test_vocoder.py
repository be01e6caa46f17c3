"""The neural vocoder (configs/vocoder.py): its iSTFT head against librosa, that it learns what
Griffin-Lim cannot, its adversarial stage, a resume inside that stage, and its use by the
audio models (mismatched features refused in one line, NaN or silence in)."""

import os

import jax
import librosa
import numpy as np
import pytest
import soundfile as sf
from test_faults import _killed
from test_faults import _train_args
from test_faults import assert_same_checkpoints
from test_train import _cli
from test_train import _params

from conftest import load_config
from jaxvae import errors
from jaxvae.audio import features
from jaxvae.data import pipeline
from jaxvae.evaluators import vocoding
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.training import builder

SR = 22050


def test_istft_inverts_librosas_stft_as_librosa_does():
  y = np.random.default_rng(0).standard_normal(SR // 2).astype(np.float32) * 0.1
  for n_fft, hop in ((1024, 256), (512, 256)):
    S = librosa.stft(y, n_fft=n_fft, hop_length=hop)
    ours = np.asarray(features.istft(S, hop, n_fft, length=len(y)))
    np.testing.assert_allclose(
      ours, librosa.istft(S, hop_length=hop, n_fft=n_fft, length=len(y)), atol=1e-6
    )
    np.testing.assert_allclose(ours, y, atol=1e-5)  # a round trip
    assert features.istft(S, hop, n_fft).shape == (hop * (S.shape[-1] - 1),)
  with pytest.raises(ValueError, match="multiple of hop_length"):
    features.istft(librosa.stft(y, n_fft=1000, hop_length=300), 300, 1000)


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
  """Two 1-s clips a vocoder can overfit: a decaying harmonic tone and a glide with clicks."""
  root = tmp_path_factory.mktemp("two_clips")
  t = np.arange(SR) / SR
  rng = np.random.default_rng(0)
  tone = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6)) * np.exp(-2 * t)
  clicks = 0.05 * rng.standard_normal(SR) * (t % 0.25 < 0.05)
  glide = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + clicks
  hiss = lambda: 1e-3 * rng.standard_normal(SR)  # a recording's noise floor, not digital silence
  tone, glide = tone + hiss(), glide + hiss()
  sf.write(root / "a.wav", tone.astype(np.float32), SR)
  sf.write(root / "b.wav", glide.astype(np.float32), SR)
  return str(root)


def _overrides(root, cache_dir, **more):
  return {
    "data.layout": "folder",
    "data.root": root,
    "data.val_fraction": "0",
    "data.n_mels": "32",
    "data.n_fft": "512",
    "data.hop_length": "256",
    "data.cache_dir": cache_dir,
    "train.batch_size": "2",
    "train.num_devices": "1",
    **more,
  }


def test_a_tiny_vocoder_learns_two_clips_beyond_griffin_lim(two_clips, cache_dir, tmp_path):
  config = load_config("vocoder.py:tiny", _overrides(two_clips, cache_dir, **{"train.lr": "4e-3"}))
  job = builder.setup(config, progress=False)
  batch = job.put(next(pipeline.eval_batches(job.train_examples, 2)))
  state = job.state
  for _ in range(STEPS):
    state, metrics = job.train_steps[0](state, batch)
  assert float(metrics["nonfinite"]) == 0.0
  results = vocoding.VocoderQuality(job, str(tmp_path)).run(state)
  vocoder, griffin = results["vocoder"], results["griffin_lim"]
  # From the same 32-band features Griffin-Lim's mel L1 is 9.0 dB; the tiny vocoder's ends
  # near 5.5 dB after 500 steps at lr 4e-3 (0.61 of it; 1,000 at 2e-3 gave 5.6 dB, 0.62).
  assert vocoder["mel_l1_db"] < 0.75 * griffin["mel_l1_db"], results
  assert os.path.isfile(results["listening"])
  assert vocoder["real_time_factor_batch1"] > 1.0


STEPS = 500


def test_a_resume_inside_the_adversarial_stage_is_bitwise(two_clips, cache_dir, tmp_path):
  """The spectral stage moves the generator only, the adversarial stage both sides. Killed
  with step 3's checkpoint in flight (the adversarial stage: epochs of 1 step, 2 spectral + 2
  adversarial), the same command resumes and ends bitwise as an uninterrupted run: both sides'
  parameters and optimizer states, and the generator's EMA."""
  overrides = _overrides(
    two_clips,
    cache_dir,
    **{
      "vocoder.spectral_epochs": "2",
      "vocoder.adversarial_epochs": "2",
      "vocoder.ema_decay": "0.9",
      "train.keep_checkpoints": "4",
    },
  )
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  assert _cli(reference, overrides, config="vocoder.py:tiny") == 0
  import orbax.checkpoint as ocp

  mgr = ocp.CheckpointManager(os.path.join(reference, "checkpoints"))
  assert sorted(mgr.all_steps()) == [1, 2, 3, 4]
  at = {
    s: mgr.restore(s, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]["params"]
    for s in (1, 2, 4)
  }
  mgr.close()
  moved = lambda a, b: any(
    not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  assert moved(at[2]["generator"], at[1]["generator"])
  assert not moved(at[2]["discriminator"], at[1]["discriminator"])
  assert moved(at[4]["generator"], at[2]["generator"])
  assert moved(at[4]["discriminator"], at[2]["discriminator"])
  rows = [r for r in open(reference / "metrics.jsonl") if '"kind": "epoch"' in r]
  assert '"train/loss_d"' not in rows[0]
  assert all(f'"train/{k}"' in rows[-1] for k in ("loss_d", "adv_g", "feature_matching", "d_real"))
  _killed(_train_args(resumed, overrides, "vocoder.py:tiny"), "checkpoint.issued", 3)
  assert _cli(resumed, overrides, config="vocoder.py:tiny") == 0
  assert_same_checkpoints(resumed, reference)  # opt_state: opt_gen, opt_disc and ema_gen
  step, state = _params(str(reference), "checkpoints")
  ema, generator = state["opt_state"]["ema_gen"], state["params"]["generator"]
  assert step == 4 and jax.tree.structure(ema) == jax.tree.structure(generator)
  assert any(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(generator))
  )


@pytest.fixture(scope="module")
def trained_pair(two_clips, cache_dir, tmp_path_factory, tiny_overrides):
  """A tiny conv VAE, and a vocoder given its features with vocoder.features_from."""
  vae = tmp_path_factory.mktemp("vae")
  assert _cli(vae, dict(tiny_overrides, **{"train.epochs": "1"})) == 0
  voc = tmp_path_factory.mktemp("voc")
  overrides = _overrides(two_clips, cache_dir, **{"vocoder.features_from": str(vae)})
  for key in ("data.n_mels", "data.n_fft", "data.hop_length"):
    del overrides[key]  # they come from the VAE's run
  overrides.update({"vocoder.spectral_epochs": "1", "vocoder.adversarial_epochs": "0"})
  assert _cli(voc, overrides, config="vocoder.py:tiny") == 0
  return str(vae), str(voc)


def test_features_from_copies_the_runs_settings_and_the_model_vocodes(trained_pair):
  import jaxvae

  vae, voc = trained_pair
  vocoder = jaxvae.load(voc)
  model = jaxvae.load(vae, vocoder=voc)
  for key in ("sr", "n_fft", "hop_length", "n_mels", "scale"):
    assert str(vocoder.settings[key]) == str(model.config.data[key])
  x = model.decode(np.zeros((2, model.latent_dim), np.float32))
  audio = model.to_audio(x)
  assert audio.shape == (2, int(model.config.data.seconds * model.sr))
  assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
  griffin = model.to_audio(x[:1], vocoder=None) if model.vocoder is None else None
  assert griffin is None  # the model was loaded with a vocoder: it is the default


def test_inputs_from_fine_tunes_on_the_vaes_reconstructions(
  trained_pair, two_clips, cache_dir, tmp_path
):
  """`vocoder.inputs_from=VAE` (with init_from=the vocoder): its settings and clip length come
  from the VAE (data.seconds 2 here becomes the VAE's 1), the VAE's weights are the state's
  'frozen' collection, the generator is given that VAE's reconstructions of the clips (equal
  to `jaxvae.load(vae).reconstruct`, in the store's units) and a run trains on them, its
  checkpoints keeping those weights; another kind of run there, or a features_from naming
  another run, is refused in one line."""
  import jaxvae
  from jaxvae.data import normalize

  vae, voc = trained_pair
  overrides = _overrides(
    two_clips, cache_dir, **{"vocoder.inputs_from": vae, "init_from": voc, "data.seconds": "2.0"}
  )
  for key in ("data.n_mels", "data.n_fft", "data.hop_length"):
    del overrides[key]
  config = load_config("vocoder.py:tiny", overrides)
  model = jaxvae.load(vae)
  assert config.data.seconds == model.config.data.seconds == 1.0
  job = builder.setup(config, progress=False)
  frozen_params = job.state.model_state["frozen"]["run"]["params"]
  for a, b in zip(jax.tree.leaves(frozen_params), jax.tree.leaves(model.variables["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  clips = np.stack([sf.read(os.path.join(two_clips, f))[0] for f in ("a.wav", "b.wav")])
  clips = clips.astype(np.float32)
  features = jax.jit(lambda v, y: job.model.apply(v, y, method="features"))
  mel = features(dict(job.state.model_state), clips)
  expected = normalize.denormalize(
    model.reconstruct(clips, sr=SR), model.stats, model.config.data.normalize
  )
  np.testing.assert_allclose(np.asarray(mel), expected, atol=1e-3)
  plain = vocoder_lib.load(voc).cfg.mel_params
  assert not np.allclose(mel, vocoding.mel_function(plain)(jax.numpy.asarray(clips)), atol=1.0)
  # A run trains on them, and its checkpoints keep the VAE's weights it started from.
  run = dict(overrides, **{"vocoder.spectral_epochs": "1", "vocoder.adversarial_epochs": "0"})
  assert _cli(tmp_path / "ft", run, config="vocoder.py:tiny") == 0
  _, saved = _params(str(tmp_path / "ft"), "checkpoints")
  kept = saved["model_state"]["frozen"]["run"]["params"]
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(model.variables["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # init_from a vocoder that was itself fine-tuned takes its generator, never its VAE weights.
  from jaxvae.training import loop

  moved = jax.tree.map(lambda v: v + 1.0, job.state.model_state["frozen"])
  job.state = job.state.replace(model_state={"frozen": moved})
  with config.unlocked():
    config.init_from = str(tmp_path / "ft")
  started = loop._weights_from(job, config)
  for a, b in zip(jax.tree.leaves(started.model_state["frozen"]), jax.tree.leaves(moved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  source = saved["params"]["generator"]
  for a, b in zip(jax.tree.leaves(started.params["generator"]), jax.tree.leaves(source)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(errors.ConfigError, match="config key 'vocoder.inputs_from'.*waveform"):
    load_config("vocoder.py:tiny", dict(overrides, **{"vocoder.inputs_from": voc}))
  with pytest.raises(errors.ConfigError, match="name different runs"):
    load_config("vocoder.py:tiny", dict(overrides, **{"vocoder.features_from": voc}))


def test_a_vocoder_of_other_features_is_refused_in_one_line(trained_pair, capsys, tmp_path):
  import jaxvae

  vae, voc = trained_pair
  model = jaxvae.load(vae)
  other = vocoder_lib.load(voc)
  other.settings = dict(other.settings, n_mels=128)
  with pytest.raises(errors.ConfigError, match=r"data\.n_mels \d+ vs 128.*features_from"):
    model.to_audio(np.zeros((1, *model.spec.input_shape), np.float32), vocoder=other)
  with pytest.raises(errors.ConfigError, match="makes waveforms itself"):
    jaxvae.load(voc, vocoder=voc)


def test_nan_features_are_refused_and_silence_stays_silent(trained_pair):
  vocoder = vocoder_lib.load(trained_pair[1])
  n_mels = vocoder.cfg.n_mels
  with pytest.raises(errors.DataError, match="NaN or infinite"):
    vocoder(np.full((n_mels, 10), np.nan, np.float32))
  silent = vocoder(np.full((2, n_mels, 10), -100.0, np.float32))
  assert silent.shape == (2, vocoder.cfg.hop_length * 9) and not np.any(silent)


def test_export_goes_from_latent_to_waveform_through_the_vocoder(trained_pair, tiny_overrides):
  import json

  from jax import export as jax_export

  import jaxvae

  vae, voc = trained_pair
  overrides = dict(tiny_overrides, **{"generate.vocoder": voc})
  assert _cli(vae, overrides, mode="export") == 0
  assert _cli(voc, {}, mode="export", config="vocoder.py:tiny") == 0
  folder = os.path.join(vae, "export")
  with open(os.path.join(folder, "export.json"), encoding="utf-8") as f:
    meta = json.load(f)
  assert meta["vocoder"]["workdir"] == voc
  with open(os.path.join(folder, "audio_decoder.jax_export"), "rb") as f:
    audio_decoder = jax_export.deserialize(f.read())
  z = np.random.default_rng(1).standard_normal((2, meta["latent_dim"])).astype(np.float32)
  exported = np.asarray(audio_decoder.call(z))
  model = jaxvae.load(vae, vocoder=voc)
  np.testing.assert_allclose(exported, model.to_audio(model.decode(z)), atol=1e-4)
  with open(os.path.join(voc, "export", "vocoder.jax_export"), "rb") as f:
    alone = jax_export.deserialize(f.read())
  vocoder = vocoder_lib.load(voc)
  mel = np.full((1, vocoder.cfg.n_mels, vocoder.frames), -30.0, np.float32)
  np.testing.assert_allclose(np.asarray(alone.call(mel)), vocoder(mel), atol=1e-5)


def test_a_vaes_eval_measures_its_reconstructions_in_audio_through_the_vocoder(
  trained_pair, tiny_overrides
):
  import json

  vae, voc = trained_pair
  overrides = dict(
    tiny_overrides,
    **{"generate.vocoder": voc, "eval.evaluators": "validation,audio_reconstruction"},
  )
  assert _cli(vae, overrides, mode="eval") == 0
  with open(os.path.join(vae, "eval", "metrics.json"), encoding="utf-8") as f:
    audio = json.load(f)["audio_reconstruction"]
  assert audio["available"] and audio["clips"] > 0 and audio["vocoder"] == voc
  for side in ("reconstruction", "reconstruction_griffin_lim", "own_features"):
    assert set(audio[side]) == {"mel_l1_db", "stft_distance", "spectral_convergence"}
    assert all(np.isfinite(v) and v > 0 for v in audio[side].values())


def test_a_bad_file_in_a_vocoders_data_is_counted_not_fatal(two_clips, cache_dir, tmp_path):
  from jaxvae.data import dataset

  root = tmp_path / "clips"
  root.mkdir()
  for name in ("a.wav", "b.wav"):
    (root / name).write_bytes((open(os.path.join(two_clips, name), "rb")).read())
  (root / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
  config = load_config("vocoder.py:tiny", _overrides(str(root), cache_dir))
  data = dataset.load(config, progress=False)
  assert [b["path"].endswith("broken.wav") for b in data.store.bad] == [True]
  assert data.store.shape == (1, SR)  # the clips themselves, one 'band'


def test_misuses_are_one_line_each(trained_pair, tiny_overrides, tmp_path, capsys):
  import shutil

  import jaxvae

  vae, voc = trained_pair
  with pytest.raises(errors.ConfigError, match="'data.feature' is 'waveform'.*conv_vae"):
    load_config("conv_vae.py:small", tiny_overrides, **{"data.feature": "waveform"})
  assert _cli(voc, {}, mode="generate", config="vocoder.py:tiny") == 1
  assert "holds a vocoder" in capsys.readouterr().err
  empty = tmp_path / "untrained"
  empty.mkdir()
  shutil.copy(os.path.join(voc, "jaxvae_run.json"), empty / "jaxvae_run.json")
  with pytest.raises(errors.CheckpointError, match="has no checkpoint"):
    jaxvae.load(str(empty))
  with pytest.raises(errors.ConfigError, match="features_from.*data.kind='midi'"):
    midi = tmp_path / "midi_run"
    midi.mkdir()
    (midi / "jaxvae_run.json").write_text(
      '{"config": {"data": {"kind": "midi", "feature": "mel", "sr": 22050, "n_fft": 1024, '
      '"hop_length": 512, "n_mels": 64, "scale": "db"}}}'
    )
    load_config("vocoder.py:tiny", {"vocoder.features_from": str(midi)})
