"""Distances between waveforms through their spectra: what a vocoder is trained on and
measured by (jittable, differentiable; waveforms [B, samples], per-example values [B]).

- `mel_l1_db`: mean |difference| of log-mel spectrograms in dB (power, 80 mel bands at n_fft
  1024 / hop 256 by default; both floored 80 dB under the original's loudest bin, as
  librosa's power_to_db(top_db=80), so digital silence does not weigh as 100 dB of error):
  the headline "mel L1" of vocoder papers, in dB.
- `multi_resolution_mel_l1`: the same in natural-log magnitude over several (n_fft, n_mels)
  pairs (DAC's multi-scale mel loss).
- `stft_distance`: spectral convergence ||S - S'||_F / ||S||_F plus the mean absolute
  log-magnitude difference, per STFT size (hop n / 4), averaged over sizes
  (Parallel WaveGAN's multi-resolution STFT loss). `spectral_convergence` is its first term.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxvae.audio import features
from jaxvae.losses import reduce

STFT_SIZES = (512, 1024, 2048)
MEL_SCALES = ((512, 40), (1024, 80), (2048, 160))  # (n_fft, n_mels)
_EPS = 1e-5


def _magnitude(y, n_fft: int):
  spec = features.stft(y, n_fft=n_fft, hop_length=n_fft // 4, fft_dtype="float32")
  return jnp.abs(spec)  # JAX's derivative of a complex abs is finite at 0


def _mel(y, sr: int, n_fft: int, n_mels: int, power: float):
  return features.mel_spectrogram(
    y, sr=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=power, fft_dtype="float32"
  )


def _per_example(x):
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


TOP_DB = 80.0


def mel_l1_db(y, y_hat, sr: int, n_fft: int = 1024, n_mels: int = 80):
  """Mean |10 log10 mel(y) - 10 log10 mel(y_hat)| in dB (power mel; both floored TOP_DB
  under y's loudest bin, and at 1e-10), [B]."""
  p, q = _mel(y, sr, n_fft, n_mels, 2.0), _mel(y_hat, sr, n_fft, n_mels, 2.0)
  floor = jnp.maximum(p.max(axis=(-2, -1), keepdims=True) * 10.0 ** (-TOP_DB / 10.0), 1e-10)
  a = 10.0 * jnp.log10(jnp.maximum(p, floor))
  b = 10.0 * jnp.log10(jnp.maximum(q, floor))
  return _per_example(jnp.abs(a - b))


def multi_resolution_mel_l1(y, y_hat, sr: int, scales=MEL_SCALES):
  """Mean over `scales` of the mean |log mel(y) - log mel(y_hat)| (magnitude mel), [B]."""
  total = 0.0
  for n_fft, n_mels in scales:
    a = jnp.log(jnp.maximum(_mel(y, sr, n_fft, n_mels, 1.0), _EPS))
    b = jnp.log(jnp.maximum(_mel(y_hat, sr, n_fft, n_mels, 1.0), _EPS))
    total = total + _per_example(jnp.abs(a - b))
  return total / len(scales)


def spectral_convergence(y, y_hat, sizes=STFT_SIZES):
  """Mean over STFT `sizes` of ||S(y) - S(y_hat)||_F / ||S(y)||_F, [B]."""
  return stft_terms(y, y_hat, sizes)[0]


# The spectral convergence's denominator is at least this magnitude per STFT bin (a crop about
# 85 dB under full scale meets it): a silent target (a pause in speech, a rest) would otherwise
# divide by ~0, and its loss and gradient be ~1e5 times an audible crop's (tests/test_losses.py).
# Audible targets are far above it.
SC_FLOOR = 1e-3


def stft_terms(y, y_hat, sizes=STFT_SIZES):
  """(spectral convergence, mean |log S - log S'|), each averaged over `sizes`, [B] each."""
  sc, log_mag = 0.0, 0.0
  for n_fft in sizes:
    a, b = _magnitude(y, n_fft), _magnitude(y_hat, n_fft)
    num = jnp.sqrt(jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), -1))
    den = jnp.sqrt(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), -1))
    sc = sc + num / jnp.maximum(den, SC_FLOOR * jnp.sqrt(a[0].size))
    log_mag = log_mag + _per_example(
      jnp.abs(jnp.log(jnp.maximum(a, _EPS)) - jnp.log(jnp.maximum(b, _EPS)))
    )
  return sc / len(sizes), log_mag / len(sizes)


def stft_distance(y, y_hat, sizes=STFT_SIZES):
  """Spectral convergence + log-magnitude L1, averaged over STFT `sizes`, [B]."""
  sc, log_mag = stft_terms(y, y_hat, sizes)
  return sc + log_mag


def generator_terms(
  y, y_hat, mask, sr: int, mel_weight: float, stft_weight: float, sizes=STFT_SIZES
):
  """A waveform generator's spectral loss and its parts, batch means over real examples
  (`mask`): mel_weight x multi-resolution mel L1 + stft_weight x (spectral convergence +
  log-magnitude L1) over STFT `sizes`."""
  mel = reduce.masked_mean(multi_resolution_mel_l1(y, y_hat, sr), mask)
  sc, log_mag = (reduce.masked_mean(t, mask) for t in stft_terms(y, y_hat, sizes))
  loss = mel_weight * mel + stft_weight * (sc + log_mag)
  return loss, {"mel_l1": mel, "spectral_convergence": sc, "log_stft_l1": log_mag}
