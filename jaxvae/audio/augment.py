"""Data augmentation: waveform edits at preprocess time, spectrogram masking in the train step.

Waveform side (numpy + librosa, run once while the feature store is built): each training clip
can get K augmented copies, each with a random pitch shift, time stretch, added noise and gain,
every one applied with its own probability. Only training data is ever augmented; validation
and test clips are stored as they are, so validation loss stays comparable across runs.

    rng = augment.clip_rng(seed, clip_id, copy)   # reproducible per clip, in any order
    y_aug = augment.augment_waveform(y, sr, rng, **augment.waveform_kwargs(config))

Spectrogram side (pure JAX, inside the jitted step): SpecAugment-style time and frequency
masks with per-example random positions and widths, so every epoch sees new masks at no
preprocessing cost.

    batch = augment.maybe_spec_mask(jax.random.fold_in(rng, step), batch, config)

Randomness comes only from the `np.random.Generator` or JAX key passed in: no global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Peak level that augmented audio is kept under: loud gain or noise would otherwise clip when
# the waveform is written or quantized, adding distortion the model would learn.
PEAK = 0.999


# ----------------------------------------------------------------------------------------------
# Waveforms
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WaveformParams:
  """What one augmented copy does; a field is None when that augmentation is off."""

  semitones: float | None = None
  stretch_rate: float | None = None
  snr_db: float | None = None
  gain_db: float | None = None


def sample_params(
  rng: np.random.Generator,
  *,
  p_pitch: float = 0.5,
  max_semitones: float = 2.0,
  p_stretch: float = 0.5,
  max_stretch: float = 0.1,
  p_noise: float = 0.5,
  noise_snr_db: tuple[float, float] = (20.0, 40.0),
  p_gain: float = 0.5,
  gain_db: tuple[float, float] = (-6.0, 6.0),
) -> WaveformParams:
  """Draws which augmentations apply and their amounts.

  Every coin and amount is drawn whether or not it is used, so changing one probability
  does not change the random values the other augmentations get.
  """
  for name, p in (
    ("p_pitch", p_pitch),
    ("p_stretch", p_stretch),
    ("p_noise", p_noise),
    ("p_gain", p_gain),
  ):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} is {p}; expected a probability in [0, 1]")
  if not 0.0 <= max_stretch < 1.0:
    raise ValueError(f"max_stretch is {max_stretch}; expected a fraction in [0, 1)")
  coins = rng.random(4)
  semitones = rng.uniform(-max_semitones, max_semitones)
  rate = rng.uniform(1.0 - max_stretch, 1.0 + max_stretch)
  snr = rng.uniform(*noise_snr_db)
  gain = rng.uniform(*gain_db)
  return WaveformParams(
    semitones=float(semitones) if coins[0] < p_pitch else None,
    stretch_rate=float(rate) if coins[1] < p_stretch else None,
    snr_db=float(snr) if coins[2] < p_noise else None,
    gain_db=float(gain) if coins[3] < p_gain else None,
  )


def pitch_shift(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
  """Shifts pitch by `semitones`, keeping the duration (librosa: phase vocoder + resample)."""
  import librosa  # imported here: the train step uses this module without librosa.

  return librosa.effects.pitch_shift(y, sr=sr, n_steps=semitones)


def time_stretch(y: np.ndarray, rate: float) -> np.ndarray:
  """Plays `rate` times faster, same pitch; then cut or zero-padded back to len(y).

  Keeping the length keeps every example the shape the feature store expects; a faster clip
  ends in silence, a slower one loses its end.
  """
  import librosa

  return librosa.util.fix_length(librosa.effects.time_stretch(y, rate=rate), size=len(y))


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
  """Adds white Gaussian noise `snr_db` below the signal's mean power (none for silence)."""
  power = float(np.mean(np.square(y, dtype=np.float64)))
  scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
  return y + scale * rng.standard_normal(len(y))


def apply_gain(y: np.ndarray, db: float) -> np.ndarray:
  return y * 10.0 ** (db / 20.0)


def apply_params(
  y: np.ndarray, sr: int, params: WaveformParams, rng: np.random.Generator
) -> np.ndarray:
  """Applies `params` in the order pitch, stretch, noise, gain; float32, peak <= `PEAK`.

  Noise goes after the pitch and stretch so that it stays white and its SNR is measured
  against the signal that is kept; gain goes last because it changes the level, not the SNR.
  """
  out = np.asarray(y, np.float64)
  if params.semitones is not None:
    out = pitch_shift(out, sr, params.semitones)
  if params.stretch_rate is not None:
    out = time_stretch(out, params.stretch_rate)
  if params.snr_db is not None:
    out = add_noise(out, params.snr_db, rng)
  if params.gain_db is not None:
    out = apply_gain(out, params.gain_db)
  peak = float(np.max(np.abs(out), initial=0.0))
  if peak > PEAK:  # scale, not clip: clipping would add harmonics that are not in the music
    out = out * (PEAK / peak)
  return out.astype(np.float32)


def augment_waveform(
  y: np.ndarray,
  sr: int,
  rng: np.random.Generator,
  *,
  p_pitch: float = 0.5,
  max_semitones: float = 2.0,
  p_stretch: float = 0.5,
  max_stretch: float = 0.1,
  p_noise: float = 0.5,
  noise_snr_db: tuple[float, float] = (20.0, 40.0),
  p_gain: float = 0.5,
  gain_db: tuple[float, float] = (-6.0, 6.0),
) -> np.ndarray:
  """One randomly augmented copy of the mono waveform `y`: float32, same length.

  Args:
    y: float `[samples]` in [-1, 1].
    sr: sample rate of `y`.
    rng: the only source of randomness (see `clip_rng`).
    p_pitch, max_semitones: probability of a pitch shift, uniform in +-max_semitones.
    p_stretch, max_stretch: probability of a time stretch, rate uniform in 1 +- max_stretch.
    p_noise, noise_snr_db: probability of white noise, SNR in dB uniform in the range.
    p_gain, gain_db: probability of a gain change, dB uniform in the range.

  With every probability 0 the result equals `y` (as float32).
  """
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"augment_waveform expects a mono waveform [samples]; got shape {y.shape}")
  params = sample_params(
    rng,
    p_pitch=p_pitch,
    max_semitones=max_semitones,
    p_stretch=p_stretch,
    max_stretch=max_stretch,
    p_noise=p_noise,
    noise_snr_db=noise_snr_db,
    p_gain=p_gain,
    gain_db=gain_db,
  )
  if y.size == 0:
    return y.astype(np.float32)
  return apply_params(y, sr, params, rng)


def clip_rng(seed: int, clip_id: str, copy: int) -> np.random.Generator:
  """The generator for copy `copy` of clip `clip_id`: the same augmentation whatever order
  or thread the clips are processed in, and a different one for every clip and copy."""
  digest = int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "big")
  return np.random.default_rng([seed, digest, copy])


def _augment_section(config: Any) -> Any:
  """Accepts the full config (`config.data.augment`) or the augment section itself."""
  data = getattr(config, "data", None)
  return data.augment if data is not None else config


def waveform_kwargs(config: Any) -> dict:
  """`augment_waveform` keyword arguments from a config's `data.augment` section."""
  a = _augment_section(config)
  return {
    "p_pitch": a.p_pitch,
    "max_semitones": a.max_semitones,
    "p_stretch": a.p_stretch,
    "max_stretch": a.max_stretch,
    "p_noise": a.p_noise,
    "noise_snr_db": tuple(a.noise_snr_db),
    "p_gain": a.p_gain,
    "gain_db": tuple(a.gain_db),
  }


# ----------------------------------------------------------------------------------------------
# Spectrogram masking (jittable)
# ----------------------------------------------------------------------------------------------


def _band_mask(key: jax.Array, batch: int, length: int, count: int, width: float) -> jax.Array:
  """bool [batch, length]: the union of `count` random bands per example.

  A band's width is uniform in 0..floor(width * length) and its start uniform over the
  positions where it fits, so a band never wraps around or runs off the end.
  """
  max_width = int(width * length)
  if count == 0 or max_width == 0:
    return jnp.zeros((batch, length), bool)
  k_width, k_start = jax.random.split(key)
  widths = jax.random.randint(k_width, (batch, count), 0, max_width + 1)
  starts = jax.random.randint(k_start, (batch, count), 0, length - widths + 1)
  pos = jnp.arange(length)[None, None, :]
  inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
  return inside.any(axis=1)


def spec_mask(
  rng_key: jax.Array,
  x: jax.Array,
  *,
  time_masks: int = 2,
  time_width: float = 0.1,
  freq_masks: int = 2,
  freq_width: float = 0.1,
  value: float | None = None,
) -> jax.Array:
  """SpecAugment-style masking of a batch of spectrograms `x` [B, F, T].

  Each example gets `time_masks` bands of whole frames and `freq_masks` bands of whole bins,
  each band up to `time_width` (`freq_width`) of its axis, at independent random positions.
  Masked cells are set to the example's own mean (so the mask adds no level shift), or to
  `value`. Counts and widths are Python numbers (static under jit); there is no Python
  control flow on traced values. Zero masks (or widths below one bin) return `x` unchanged.
  """
  if x.ndim != 3:
    raise ValueError(f"spec_mask expects x of shape [B, F, T]; got {x.shape}")
  for name, frac in (("time_width", time_width), ("freq_width", freq_width)):
    if not 0.0 <= frac <= 1.0:
      raise ValueError(f"{name} is {frac}; expected a fraction of the axis in [0, 1]")
  b, f, t = x.shape
  k_time, k_freq = jax.random.split(rng_key)
  masked = (
    _band_mask(k_time, b, t, time_masks, time_width)[:, None, :]
    | _band_mask(k_freq, b, f, freq_masks, freq_width)[:, :, None]
  )
  if value is None:
    fill = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
  else:
    fill = jnp.asarray(value, x.dtype)
  return jnp.where(masked, fill, x)


def maybe_spec_mask(
  rng_key: jax.Array, batch: Mapping[str, jax.Array], config: Any
) -> dict[str, jax.Array]:
  """A new batch dict whose `x` is masked when `spec_mask` is on in the config.

  `config` is the full config (its `data.augment` section is read) or that section. Call it
  in the training step only (never on validation batches), with a per-step key.
  """
  a = _augment_section(config)
  out = dict(batch)
  if a.spec_mask:
    out["x"] = spec_mask(
      rng_key,
      batch["x"],
      time_masks=a.time_masks,
      time_width=a.time_width,
      freq_masks=a.freq_masks,
      freq_width=a.freq_width,
    )
  return out
