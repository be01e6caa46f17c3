"""Per-example reconstruction errors: `[B, ...]` predictions and targets -> `[B]` float32.

The plain errors (`nll`, `mean_squared_error`), the spectral MusicVAE's terms (frequency-weighted
MSE, the multi-resolution FFT-magnitude distance, the range penalty) and the distance between
predicted and target embeddings. Spectrogram terms take `[B, F, T]` (mel rows F, frames T).

The spectral MusicVAE's "spectral" term was plain MSE in the original code although its write-up
described an FFT-magnitude distance; `spectral_loss` is the FFT-magnitude version.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.losses import reduce

# The spectral MusicVAE's emphasis: low mels (bass, fundamentals) and the middle band weigh more,
# the top band (mostly noise and cymbals) less. Each entry is (start, end, weight), in fractions
# of F.
DEFAULT_BANDS = ((0.0, 0.2, 1.5), (0.3, 0.7, 2.0), (0.8, 1.0, 0.8))
SPECTRAL_KINDS = ("l1", "l2")
EMBEDDING_DISTANCES = ("mse", "cosine")


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------------------------
# Plain errors
# ----------------------------------------------------------------------------------------------


def nll(recon: jax.Array, x: jax.Array, kind: str) -> jax.Array:
  """Per-example negative log-likelihood (up to a constant), summed over features.

  'bce': Bernoulli (recon are probabilities); anything else: unit-variance Gaussian, i.e. the
  sum of squared errors.
  """
  x = x.astype(jnp.float32)
  recon = recon.astype(jnp.float32)
  if kind == "bce":
    p = jnp.clip(recon, 1e-6, 1.0 - 1e-6)
    return reduce.per_example_sum(-(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p)))
  return reduce.per_example_sum(jnp.square(recon - x))


def mean_squared_error(recon: jax.Array, x: jax.Array) -> jax.Array:
  """Per-example mean squared error over all features: `[B]`.

  Every family reports its masked batch mean as `recon_mse`, comparable across families
  because it is a mean per feature whatever the objective sums or weighs.
  """
  return reduce.per_example_mean(jnp.square(recon.astype(jnp.float32) - x.astype(jnp.float32)))


# ----------------------------------------------------------------------------------------------
# Frequency-weighted reconstruction
# ----------------------------------------------------------------------------------------------


def band_weights(
  n_bins: int, bands: Sequence[Sequence[float]] = DEFAULT_BANDS, default: float = 1.0
) -> np.ndarray:
  """Weight per frequency row from fractional bands, float32 `[n_bins]`.

  Row `f` sits at the fraction `f / n_bins` of the axis and belongs to the band
  `(start, end, weight)` when `start <= f / n_bins < end` (an `end` of 1.0 therefore includes
  the last row). Rows in no band get `default`; where bands overlap the later one wins.
  """
  position = np.arange(n_bins) / n_bins
  weights = np.full(n_bins, default, np.float32)
  for band in bands:
    if len(band) != 3:
      raise ValueError(f"a band is (start, end, weight), got {tuple(band)}")
    start, end, weight = (float(v) for v in band)
    if not 0.0 <= start < end <= 1.0 or weight < 0.0:
      raise ValueError(f"band {tuple(band)}: need 0 <= start < end <= 1 and weight >= 0")
    weights[(position >= start) & (position < end)] = weight
  return weights


def frequency_weighted_mse(recon: jax.Array, x: jax.Array, weights) -> jax.Array:
  """Per-example weighted MSE, normalized by the weight sum: `[B]`.

  `weights` is either one value per frequency row (`[F]`, broadcast over frames) or any array
  broadcastable to `x.shape[1:]`. The value is sum(w * (recon - x)^2) / sum(w) over the
  elements of one example, so uniform weights give the plain per-example MSE.
  """
  recon = recon.astype(jnp.float32)
  x = x.astype(jnp.float32)
  w = jnp.asarray(weights, jnp.float32)
  if w.ndim == 1 and x.ndim == 3:
    w = w[:, None]  # one weight per mel row, the same for every frame
  w = jnp.broadcast_to(w, x.shape[1:])
  weighted = jnp.sum(_flat(w[None] * jnp.square(recon - x)), axis=-1)
  return weighted / jnp.sum(w)


# ----------------------------------------------------------------------------------------------
# FFT-magnitude distance along time
# ----------------------------------------------------------------------------------------------


def _hann(size: int) -> np.ndarray:
  """Periodic Hann window: overlapping at hop size // 2 it sums to a constant."""
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)).astype(np.float32)


def _frame_time(x: jax.Array, size: int) -> jax.Array:
  """`[B, F, T]` -> `[B, F, n_frames, size]`, hop size // 2, the tail zero-padded.

  The end is padded so that every frame index is covered by some window (no frame is dropped);
  a clip shorter than `size` gives one zero-padded window.
  """
  hop = max(size // 2, 1)
  t = x.shape[-1]
  n_frames = 1 + max(-(-(t - size) // hop), 0)
  x = jnp.pad(x, ((0, 0), (0, 0), (0, (n_frames - 1) * hop + size - t)))
  index = np.arange(n_frames)[:, None] * hop + np.arange(size)[None, :]
  return x[..., index]


def _magnitudes(x: jax.Array, size: int | None) -> jax.Array:
  if size is None:
    # No window here: the full-length magnitude is then exactly invariant to circular shifts.
    return jnp.abs(jnp.fft.rfft(x, axis=-1))
  frames = _frame_time(x, size) * _hann(size)
  return jnp.abs(jnp.fft.rfft(frames, axis=-1))


def spectral_loss(
  recon: jax.Array, x: jax.Array, fft_sizes: Sequence[int | None] = (None,), kind: str = "l1"
) -> jax.Array:
  """Distance between FFT magnitudes along the time axis of `[B, F, T]` spectrograms: `[B]`.

  For each size in `fft_sizes` (None = one rfft over all T frames, no window; an int = Hann
  windows of that many frames at hop size // 2) the rfft magnitudes of `recon` and `x` are
  compared per mel row, with the mean absolute (`kind='l1'`) or mean squared (`'l2'`)
  difference over rows, windows and FFT bins; the resolutions are then averaged. It measures
  whether the reconstruction has the input's temporal modulations (rhythm, tremolo, onsets'
  periodicity) regardless of their phase.
  """
  if kind not in SPECTRAL_KINDS:
    raise ValueError(f"spectral_loss kind must be 'l1' or 'l2', got {kind!r}")
  sizes = tuple(fft_sizes) or (None,)
  recon = recon.astype(jnp.float32)
  x = x.astype(jnp.float32)
  total = jnp.zeros((x.shape[0],), jnp.float32)
  for size in sizes:
    diff = _magnitudes(recon, size) - _magnitudes(x, size)
    total = total + reduce.per_example_mean(jnp.abs(diff) if kind == "l1" else jnp.square(diff))
  return total / len(sizes)


# ----------------------------------------------------------------------------------------------
# Range penalty
# ----------------------------------------------------------------------------------------------


def range_penalty(recon: jax.Array, x: jax.Array, margin: float = 0.0) -> jax.Array:
  """Mean squared excess of `recon` outside its own input's [min - margin, max + margin]: `[B]`.

  Keeps a decoder without an output activation from producing values no example had (which
  Griffin-Lim turns into loud artifacts); values inside the range cost nothing.
  """
  recon = _flat(recon.astype(jnp.float32))
  x = _flat(x.astype(jnp.float32))
  low = jnp.min(x, axis=-1, keepdims=True) - margin
  high = jnp.max(x, axis=-1, keepdims=True) + margin
  excess = jax.nn.relu(recon - high) + jax.nn.relu(low - recon)
  return jnp.mean(jnp.square(excess), axis=-1)


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def embedding_distance(pred: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-example `[B]` distance of `[B, D]` vectors: sum of squares ('mse') or 1 - cosine
  similarity ('cosine')."""
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  if kind == "cosine":
    # eps inside the norms: a zero vector (never a real embedding) must not give NaN.
    dot = jnp.sum(pred * target, -1)
    norms = jnp.sqrt(jnp.sum(jnp.square(pred), -1) * jnp.sum(jnp.square(target), -1) + 1e-12)
    return 1.0 - dot / norms
  return jnp.sum(jnp.square(pred - target), -1)
