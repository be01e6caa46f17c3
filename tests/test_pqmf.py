"""jaxvae.audio.pqmf: the multi-band filter bank of a RAVE-style waveform model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxvae.audio import pqmf

SR = 44100


def _error_db(bank, y):
  """Reconstruction error of analysis then synthesis, in dB of the signal, away from the ends
  (the zero padding there is not the signal)."""
  y = np.asarray(bank.pad_to(jnp.asarray(y)))
  y_hat = np.asarray(bank.synthesis(bank.analysis(y)))
  e = bank.taps
  err = y_hat[:, e:-e] - y[:, e:-e]
  return 10 * np.log10(np.sum(err**2) / np.sum(y[:, e:-e] ** 2))


@pytest.mark.parametrize("bands", [16, 8])
def test_analysis_then_synthesis_gives_back_noise_and_a_chirp_within_minus_60_db(bands):
  bank = pqmf.PQMF(bands)
  noise = 0.3 * np.random.default_rng(0).standard_normal((2, SR // 2)).astype(np.float32)
  t = np.arange(SR // 2) / SR
  chirp = 0.5 * signal.chirp(t, 20, t[-1], 20000).astype(np.float32)[None]
  assert _error_db(bank, noise) < -60
  assert _error_db(bank, chirp) < -60
  sub = bank.analysis(bank.pad_to(jnp.asarray(noise)))
  assert sub.shape == (2, bands, -(-(SR // 2) // bands))  # critically sampled


def test_each_band_holds_its_own_frequencies():
  bank = pqmf.PQMF(16)
  t = np.arange(SR // 4) / SR
  width = SR / 2 / 16
  for k in (0, 5, 15):
    tone = np.sin(2 * np.pi * (k + 0.5) * width * t).astype(np.float32)[None]
    energy = np.sum(np.square(np.asarray(bank.analysis(bank.pad_to(jnp.asarray(tone))))), -1)[0]
    assert energy[k] / energy.sum() > 0.99, (k, energy / energy.sum())


def test_the_bank_is_jittable_and_differentiable_and_refuses_odd_lengths():
  bank = pqmf.PQMF(4)
  y = jnp.ones((1, 64))
  grad = jax.grad(lambda x: jnp.sum(jax.jit(bank.synthesis)(jax.jit(bank.analysis)(x)) ** 2))(y)
  assert np.isfinite(np.asarray(grad)).all()
  with pytest.raises(ValueError, match="not a multiple of 4 bands"):
    bank.analysis(jnp.ones((1, 63)))
  with pytest.raises(ValueError, match=r"expected \[B, 4, frames\]"):
    bank.synthesis(jnp.ones((1, 3, 16)))
