"""jaxvae.audio.features against librosa: filterbank, STFT, mel power, dB, MFCC, Griffin-Lim, WAV.

Every numeric check compares with librosa's own output on the same audio: a real recording that
ships with music21 (skipped where it is not installed) and deterministic synthetic music
(harmonic notes with vibrato and attacks, clicks, a noise floor).
"""

import importlib.util
import os
import types

import chex
import jax
import librosa
import numpy as np
import pytest
import scipy.fft
import soundfile as sf

from conftest import load_config
from jaxvae import errors
from jaxvae.audio import features
from jaxvae.audio import synthesis
from jaxvae.data import featurize
from jaxvae.data import normalize as normalize_lib
from jaxvae.sampling import prior

# (sr, n_fft, hop_length, n_mels): the defaults, the speech setting, a finer hop, a small one.
CONFIGS = [
  (22050, 2048, 512, 128),
  (16000, 1024, 512, 128),
  (22050, 1024, 256, 128),
  (16000, 512, 160, 64),
]
SECONDS = 3.0
MEL_REL_TOL = 1e-4  # relative Frobenius error of the mel power
DB_TOL = 1e-3  # max |dB difference| where librosa's dB is not clamped by top_db


def _synth_music(sr, seconds, seed=0):
  """Six notes with 8 decaying harmonics, 5 Hz vibrato, sharp attacks, clicks and noise."""
  rng = np.random.default_rng(seed)
  n = int(sr * seconds)
  t = np.arange(n) / sr
  y = np.zeros(n)
  note_len = n // 6
  for i, f0 in enumerate(rng.uniform(110.0, 660.0, size=6)):
    seg = slice(i * note_len, (i + 1) * note_len)
    local_t = t[seg] - t[seg][0]
    # Vibrato: instantaneous frequency f0 (1 + 0.02 sin(2 pi 5 t)), integrated to a phase.
    phase = 2 * np.pi * f0 * (local_t - 0.02 / (2 * np.pi * 5) * np.cos(2 * np.pi * 5 * local_t))
    envelope = np.minimum(local_t / 0.01, 1.0) * np.exp(-3.0 * local_t)
    for h in range(1, 9):
      y[seg] += envelope * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h**1.5
  clicks = rng.choice(n, size=8, replace=False)
  y[clicks] += rng.uniform(-0.5, 0.5, size=8)
  y += 10 ** (-50 / 20) * rng.standard_normal(n)
  return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def _real_recording():
  """music21's 20 s test recording at 22050 Hz (first 6 s), or None if music21 is absent."""
  spec = importlib.util.find_spec("music21")
  if spec is None or spec.origin is None:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "audioSearch", "test_audio.wav")
  if not os.path.exists(path):
    return None
  y, _ = librosa.load(path, sr=22050, duration=6.0)
  return y


@pytest.fixture(scope="module")
def recording():
  y = _real_recording()
  if y is None:
    pytest.skip("no real recording available offline (music21 not installed)")
  return y


def _at_rate(y, sr):
  return y if sr == 22050 else librosa.resample(y, orig_sr=22050, target_sr=sr)


def _rel_err(ours, ref):
  ours = np.asarray(ours).astype(np.complex128 if np.iscomplexobj(ours) else np.float64)
  return np.linalg.norm(ours - ref) / np.linalg.norm(ref)


def _max_db_diff(ours_power, ref_power):
  """Max |dB difference| over cells where librosa's dB is clear of the top_db floor."""
  ref_db = librosa.power_to_db(ref_power)
  ours_db = np.asarray(features.power_to_db(ours_power))
  above = ref_db > ref_db.max() - 80.0 + 1.0
  assert above.mean() > 0.2, "test audio should have real content above the floor"
  return np.abs(ours_db - ref_db)[above].max()


# ---------------------------------------------------------------------------------------------
# Filterbank and window
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(sr=22050, n_fft=2048),
    dict(sr=16000, n_fft=1024, n_mels=80, fmin=20.0, fmax=7600.0),
    dict(sr=22050, n_fft=1024, n_mels=64, htk=True),
    dict(sr=8000, n_fft=512, n_mels=40, norm=None),
  ],
)
def test_mel_filterbank_is_librosas(kwargs):
  ours = features.mel_filterbank(**kwargs)
  ref = librosa.filters.mel(**kwargs)
  assert ours.dtype == np.float32
  chex.assert_shape(ours, (kwargs.get("n_mels", 128), 1 + kwargs["n_fft"] // 2))
  np.testing.assert_array_equal(ours, ref)


def test_mel_filterbank_lp_norm_matches_librosa():
  ours = features.mel_filterbank(22050, 2048, n_mels=64, norm=2.0)
  np.testing.assert_allclose(
    ours, librosa.filters.mel(sr=22050, n_fft=2048, n_mels=64, norm=2.0), rtol=1e-6, atol=1e-9
  )


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa(htk):
  hz = np.array([0.0, 50.0, 440.0, 999.9, 1000.0, 4000.0, 11025.0])
  np.testing.assert_allclose(
    features.hz_to_mel(hz, htk), librosa.hz_to_mel(hz, htk=htk), rtol=1e-12
  )
  mels = librosa.hz_to_mel(hz, htk=htk)
  np.testing.assert_allclose(features.mel_to_hz(mels, htk), hz, rtol=1e-9, atol=1e-9)


def test_window_is_periodic_hann_centred():
  ours = features.get_window("hann", 1000, 2048)
  ref = librosa.util.pad_center(librosa.filters.get_window("hann", 1000, fftbins=True), size=2048)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
  assert ours[0] == 0.0 and ours[523] == 0.0 and ours[524] == 0.0  # periodic: w[0] = 0


# ---------------------------------------------------------------------------------------------
# STFT and mel power
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(n_fft=1024, hop_length=256),
    dict(n_fft=1024, hop_length=300, win_length=800, center=False),
    dict(n_fft=512, hop_length=128, pad_mode="reflect"),
  ],
)
def test_stft_matches_librosa(recording, kwargs):
  y = recording[:44100]
  ours = features.stft(y, **kwargs)
  ref = librosa.stft(y, **kwargs)
  assert ours.dtype == np.complex64
  chex.assert_shape(ours, ref.shape)
  assert _rel_err(ours, ref) < 1e-5


def test_stft_default_hop_is_quarter_window():
  y = _synth_music(8000, 1.0)
  chex.assert_shape(features.stft(y, n_fft=512), librosa.stft(y, n_fft=512).shape)


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", CONFIGS)
def test_mel_power_and_db_match_librosa_on_synthetic_music(sr, n_fft, hop, n_mels):
  y = _synth_music(sr, SECONDS)
  kwargs = dict(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
  ours = features.mel_spectrogram(y, **kwargs)
  ref = librosa.feature.melspectrogram(y=y, **kwargs)
  chex.assert_shape(ours, (n_mels, 1 + len(y) // hop))
  assert _rel_err(ours, ref) < MEL_REL_TOL
  assert _max_db_diff(ours, ref) < DB_TOL


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", CONFIGS)
def test_mel_power_and_db_match_librosa_on_a_recording(recording, sr, n_fft, hop, n_mels):
  y = _at_rate(recording, sr)
  kwargs = dict(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
  ours = features.mel_spectrogram(y, **kwargs)
  ref = librosa.feature.melspectrogram(y=y, **kwargs)
  chex.assert_shape(ours, ref.shape)
  assert _rel_err(ours, ref) < MEL_REL_TOL
  assert _max_db_diff(ours, ref) < DB_TOL


@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_batched_input_matches_librosa_per_clip(monkeypatch, chunk_bytes):
  if chunk_bytes is not None:  # the CPU path that transforms frames in small chunks
    monkeypatch.setattr(features, "CPU_CHUNK_BYTES", chunk_bytes)
  sr, n_fft, hop, n_mels = CONFIGS[1]
  clips = np.stack([_synth_music(sr, SECONDS, seed=s) for s in range(4)])
  kwargs = dict(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
  ours = features.mel_spectrogram(clips.reshape(2, 2, -1), **kwargs)
  frames = 1 + clips.shape[-1] // hop
  chex.assert_shape(ours, (2, 2, n_mels, frames))
  ours = np.asarray(ours).reshape(4, n_mels, frames)
  for clip, mel in zip(clips, ours):
    ref = librosa.feature.melspectrogram(y=clip, **kwargs)
    assert _rel_err(mel, ref) < MEL_REL_TOL


def test_defaults_are_librosas():
  y = _synth_music(16000, 1.0)
  ours = features.mel_spectrogram(y)  # sr 22050, n_fft 2048, hop 512, 128 mels
  chex.assert_shape(ours, (128, 32))  # 1 + 16000 // 512
  assert _rel_err(ours, librosa.feature.melspectrogram(y=y)) < MEL_REL_TOL


def test_magnitude_and_other_options_match_librosa(recording):
  y = recording[:22050]
  kwargs = dict(
    sr=22050,
    n_fft=1024,
    hop_length=256,
    n_mels=64,
    power=1.0,
    fmin=60.0,
    fmax=8000.0,
    win_length=900,
    window=("kaiser", 8.0),
    htk=True,
  )
  ours = features.mel_spectrogram(y, **kwargs)
  ref = librosa.feature.melspectrogram(y=y, **kwargs)
  assert _rel_err(ours, ref) < MEL_REL_TOL


def test_float32_fft_is_close_and_less_exact(recording):
  """The fast path stays within 1e-6; the float64 default is what buys the dB agreement."""
  sr, n_fft, hop, n_mels = CONFIGS[2]
  y = recording[: 3 * 22050]
  kwargs = dict(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
  ref = librosa.feature.melspectrogram(y=y, **kwargs)
  fast = features.mel_spectrogram(y, fft_dtype="float32", **kwargs)
  exact = features.mel_spectrogram(y, **kwargs)
  assert _rel_err(fast, ref) < 1e-6
  assert _max_db_diff(exact, ref) < 0.1 * _max_db_diff(fast, ref)
  with pytest.raises(ValueError, match="fft_dtype"):
    features.mel_spectrogram(y, fft_dtype="float16", **kwargs)


@pytest.mark.parametrize("fft_dtype", ["float64", "float32"])
def test_gradients_flow_through_the_features(fft_dtype):
  y = _synth_music(16000, 0.5)
  kwargs = dict(sr=16000, n_fft=512, hop_length=128, n_mels=40, fft_dtype=fft_dtype)
  weights = np.random.default_rng(1).uniform(size=(40, 1 + len(y) // 128)).astype(np.float32)
  # Quadratic in y, so a central difference is exact up to rounding.
  loss = lambda y: jax.numpy.sum(weights * features.mel_spectrogram(y, **kwargs))
  grad = jax.jit(jax.grad(loss))(y)
  chex.assert_shape(grad, y.shape)
  direction = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
  eps = 1e-2
  slope = (loss(y + eps * direction) - loss(y - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(np.vdot(grad, direction), slope, rtol=1e-2)


def test_mel_spectrogram_traces_under_jit():
  y = _synth_music(16000, 1.0)
  jitted = jax.jit(lambda y: features.mel_spectrogram(y, sr=16000, n_fft=1024))
  np.testing.assert_allclose(
    jitted(y), features.mel_spectrogram(y, sr=16000, n_fft=1024), rtol=1e-6, atol=1e-9
  )


def test_too_short_signal_is_a_clear_error():
  with pytest.raises(ValueError, match="shorter than n_fft"):
    features.mel_spectrogram(np.zeros(100, np.float32), center=False)


# ---------------------------------------------------------------------------------------------
# Decibels
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mel_pair():
  """Two clips' mel power with peaks 30 dB apart, so per-example semantics are visible."""
  clips = np.stack([_synth_music(16000, 2.0, seed=5), 0.03 * _synth_music(16000, 2.0, seed=6)])
  return librosa.feature.melspectrogram(y=clips, sr=16000, n_fft=1024, hop_length=512)


@pytest.mark.parametrize(
  "kwargs", [dict(), dict(ref=np.max), dict(ref=0.5, top_db=None), dict(amin=1e-6, top_db=40.0)]
)
def test_power_to_db_matches_librosa(mel_pair, kwargs):
  ref = librosa.power_to_db(mel_pair[0], **kwargs)
  np.testing.assert_allclose(features.power_to_db(mel_pair[0], **kwargs), ref, atol=1e-4)


def test_power_to_db_batched_is_per_example(mel_pair):
  ours = np.asarray(features.power_to_db(mel_pair, ref=np.max))
  chex.assert_shape(ours, mel_pair.shape)
  for got, mel in zip(ours, mel_pair):
    np.testing.assert_allclose(got, librosa.power_to_db(mel, ref=np.max), atol=1e-4)
  # A traceable callable that is not a known reduction is mapped over the examples too.
  mapped = features.power_to_db(mel_pair, ref=lambda s: jax.numpy.max(s))
  np.testing.assert_allclose(mapped, ours, atol=1e-5)


def test_amplitude_to_db_matches_librosa(mel_pair):
  magnitude = np.sqrt(mel_pair[1])
  np.testing.assert_allclose(
    features.amplitude_to_db(magnitude, ref=np.max),
    librosa.amplitude_to_db(magnitude, ref=np.max),
    atol=1e-4,
  )
  complex_spec = magnitude * np.exp(1j * 0.3)
  np.testing.assert_allclose(
    features.amplitude_to_db(complex_spec), librosa.amplitude_to_db(magnitude), atol=1e-4
  )


def test_db_arguments_are_checked():
  with pytest.raises(ValueError, match="amin"):
    features.power_to_db(np.ones((2, 2)), amin=0.0)
  with pytest.raises(ValueError, match="top_db"):
    features.power_to_db(np.ones((2, 2)), top_db=-1.0)


# ---------------------------------------------------------------------------------------------
# MFCC
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dct_type,norm", [(2, "ortho"), (2, None), (3, "ortho"), (3, None)])
def test_dct_matrix_is_scipys(dct_type, norm):
  x = np.random.default_rng(0).standard_normal((40, 7))
  ref = scipy.fft.dct(x, type=dct_type, norm=norm, axis=0)[:13]
  np.testing.assert_allclose(
    features.dct_matrix(40, 13, dct_type, norm) @ x, ref, rtol=1e-5, atol=1e-5
  )


def test_mfcc_matches_librosa(recording):
  sr, n_fft, hop, n_mels = CONFIGS[2]
  kwargs = dict(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
  ours = features.mfcc(recording, **kwargs)
  ref = librosa.feature.mfcc(y=recording, **kwargs)
  chex.assert_shape(ours, (20, 1 + len(recording) // hop))
  # DB_TOL per mel cell spreads over 128 cells through an orthonormal DCT.
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-2)


def test_mfcc_batched_lifter_and_precomputed_S(mel_pair):
  S_db = librosa.power_to_db(mel_pair[0])
  for kwargs in [dict(n_mfcc=13, lifter=22), dict(n_mfcc=30, dct_type=3)]:
    np.testing.assert_allclose(
      features.mfcc(S=S_db, **kwargs), librosa.feature.mfcc(S=S_db, **kwargs), rtol=1e-5, atol=1e-3
    )
  clips = np.stack([_synth_music(16000, 1.0, seed=s) for s in range(2)])
  ours = features.mfcc(clips, sr=16000, n_fft=1024, hop_length=512)
  chex.assert_shape(ours, (2, 20, 32))
  for got, clip in zip(np.asarray(ours), clips):
    ref = librosa.feature.mfcc(y=clip, sr=16000, n_fft=1024, hop_length=512)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Listening
# ---------------------------------------------------------------------------------------------


def test_mel_to_audio_reconstructs_the_spectrum_and_writes_wav(tmp_path):
  sr = 16000
  y = _synth_music(sr, 0.5, seed=3)
  kwargs = dict(sr=sr, n_fft=512, hop_length=128)
  mel = features.mel_spectrogram(y, n_mels=64, **kwargs)
  audio = synthesis.mel_to_audio(mel, n_iter=8, length=len(y), **kwargs)
  assert audio.dtype == np.float32 and audio.shape == y.shape
  np.testing.assert_array_equal(  # seeded: reproducible
    audio, synthesis.mel_to_audio(mel, n_iter=8, length=len(y), **kwargs)
  )
  # Griffin-Lim loses phase, not the spectrum: the mel dB of the result tracks the input's
  # (~0.9 correlation measured; white noise of the same length gives ~-0.1).
  back = features.mel_spectrogram(audio, n_mels=64, **kwargs)
  db_in, db_out = (np.asarray(features.power_to_db(m, ref=np.max)) for m in (mel, back))
  assert np.corrcoef(db_in.ravel(), db_out.ravel())[0, 1] > 0.8
  # The reports' fast preview (pseudo-inverse of the filterbank) keeps the spectrum as well.
  fast = synthesis.mel_to_audio(mel, n_iter=8, length=len(y), inverse="pinv", **kwargs)
  back = features.mel_spectrogram(fast, n_mels=64, **kwargs)
  db_fast = np.asarray(features.power_to_db(back, ref=np.max))
  assert np.corrcoef(db_in.ravel(), db_fast.ravel())[0, 1] > 0.8

  path = synthesis.write_wav(str(tmp_path / "out" / "clip.wav"), 2.0 * audio, sr)
  info = sf.info(path)
  assert (info.samplerate, info.frames, info.subtype) == (sr, len(y), "PCM_16")
  written, _ = sf.read(path, dtype="float32")
  assert np.abs(written).max() <= 1.0  # clipped, not wrapped around
  with pytest.raises(ValueError, match="NaN"):
    synthesis.write_wav(str(tmp_path / "bad.wav"), np.full(10, np.nan), sr)


@pytest.mark.parametrize("feature", ["mel", "mfcc"])
def test_peak_db_reference_ignores_the_level(feature):
  """data.db_reference='peak' (librosa's ref=np.max): a clip 40 dB quieter has the same
  features; 'absolute' (the default, ref=1.0) keeps the level, and its store key is the one
  stores had before the option existed."""
  y = np.random.default_rng(0).normal(size=(1, 22050)).astype(np.float32)
  y = np.concatenate([y, 0.01 * y, 0.0 * y])  # a clip, 40 dB quieter, silence
  params = dict(sr=22050, n_fft=1024, hop_length=512, n_mels=64, n_mfcc=20, scale="db")
  params["feature"] = feature
  absolute = featurize.compute_features(y, params)
  peak = featurize.compute_features(y, params | {"db_reference": "peak"})
  # The quieter copy is 40 dB lower in every mel bin (MFCC: c0 carries the shift, x sqrt(n)).
  assert np.abs(absolute[0] - absolute[1]).max() > 39.0
  np.testing.assert_allclose(peak[0], peak[1], atol=1e-3)
  if feature == "mel":  # the same spectrogram, shifted so that its loudest bin is 0 dB
    top = absolute[:2].reshape(2, -1).max(1)[:, None, None]
    np.testing.assert_allclose(peak[:2], absolute[:2] - top, atol=1e-3)
    # Silence stays at the floor (librosa's ref=np.max would make it 0 dB, the loudest).
    np.testing.assert_allclose(peak[2], -80.0, atol=1e-3)
  else:  # the default MFCC path is the one it always was
    reference = features.mfcc(y=y, sr=22050, n_mfcc=20, n_fft=1024, hop_length=512, n_mels=64)
    np.testing.assert_allclose(absolute, reference, atol=1e-3)
  config = load_config("conv_vae.py:small", {})
  assert "db_reference" not in featurize.feature_params(config)
  peak_config = load_config("conv_vae.py:small", {"data.db_reference": "peak"})
  assert featurize.feature_params(peak_config)["db_reference"] == "peak"


def test_audio_from_peak_referenced_features_has_a_fixed_peak():
  """Peak-referenced features hold no level: audio made from them is brought to
  PEAK_OUTPUT_DB rather than left at the 0 dB bin's (inaudible) level."""
  config = load_config("conv_vae.py:small", {"data.db_reference": "peak"})
  stats = {"mean": -30.0, "std": 15.0, "band_mean": [-30.0] * 64, "band_std": [15.0] * 64}
  stats_only = types.SimpleNamespace(manifest={"stats": stats})
  x = np.random.default_rng(0).normal(size=(64, 20)).astype(np.float32)
  audio = prior.features_to_audio(x, stats_only, config, n_iter=2)
  assert np.abs(audio).max() == pytest.approx(10 ** (prior.PEAK_OUTPUT_DB / 20), rel=1e-5)


def test_band_normalization_standardizes_each_band_of_the_training_clips():
  """data.normalize='band': each band (axis -2) has mean 0 and std 1 over the training
  clips' frames, from the store's statistics (validation, bad and augmented rows excluded);
  a constant band is centred, not scaled up; denormalize undoes it exactly; features with
  another band count, or statistics without per-band values, are a clear error."""
  rng = np.random.default_rng(0)
  scale = np.array([1.0, 5.0, 20.0, 0.0])[None, :, None]  # the last band never varies
  x = rng.normal(size=(7, 4, 7)) * scale + np.array([0.0, -10.0, -40.0, -80.0])[None, :, None]
  rows = [{"split": "train", "bad": False}] * 4 + [{"split": "val", "bad": False}]
  rows += [{"split": "train", "bad": False, "augment": 1}, {"split": "train", "bad": True}]
  x[4:] += 100.0  # validation, augmented and bad rows: not in the statistics
  stats = normalize_lib.statistics(x, rows)
  z = normalize_lib.normalize_features(x[:4].astype(np.float32), stats, "band")
  assert z.dtype == np.float32
  np.testing.assert_allclose(z[:, :3].mean(axis=(0, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(z[:, :3].std(axis=(0, 2)), 1.0, atol=1e-5)
  np.testing.assert_allclose(z[:, 3], 0.0, atol=1e-5)
  one = normalize_lib.normalize_features(x[0], stats, "band")  # one example [bands, frames]
  np.testing.assert_allclose(one, z[0], atol=1e-5)
  np.testing.assert_allclose(normalize_lib.denormalize(z, stats, "band"), x[:4], atol=1e-4)
  with pytest.raises(errors.DataError, match=r"expected \[\.\.\., 4 bands, frames\]"):
    normalize_lib.normalize_features(x[0].T, stats, "band")
  old = {k: stats[k] for k in ("mean", "std", "min_mean", "max_mean")}
  with pytest.raises(errors.DataError, match="'data.normalize' is 'band'"):
    normalize_lib.normalize_features(x[0], old, "band")
  # Its own store (key), so that a store made without the statistics is never reused.
  glob = load_config("conv_vae.py:small", {"data.normalize": "global"})
  assert "normalize" not in featurize.feature_params(glob)
  band = load_config("conv_vae.py:small", {"data.normalize": "band"})
  assert featurize.feature_params(band)["normalize"] == "band"
