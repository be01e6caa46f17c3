"""A pseudo-quadrature mirror filter bank (PQMF): a waveform split into `bands` critically
sampled sub-bands and put back together, near-perfectly (RAVE's multi-band decomposition).

The bank is the cosine modulation of one linear-phase low-pass prototype (Nguyen 1994; the
construction of RAVE's `pqmf.py`, written here from the textbook): a Kaiser-window low-pass of
`taps` = 2 * `bands` * `overlap` + 1 coefficients whose cut-off is chosen (by a bounded scalar
search) so that the shifted power responses of neighbouring bands sum to one across the
transition band, the condition for aliasing between adjacent bands to cancel and for the
overall response to be flat. Band k's analysis filter is

    h_k[n] = 2 p[n] cos((2k + 1) pi / (2M) (n - (N - 1) / 2) + (-1)^k pi / 4)

and its synthesis filter the same with the phase term negated; analysis filters and keeps
every M-th sample, synthesis puts zeros between samples, filters and sums (times M). Both
run as strided 1-D convolutions (jittable, differentiable, batched) and the bank's delay of
N - 1 samples is removed, so `synthesis(analysis(x))` lines up with `x`.

    bank = PQMF(bands=16)
    sub = bank.analysis(y)        # [B, samples] -> [B, 16, samples / 16]
    y_hat = bank.synthesis(sub)   # -> [B, samples]

The input length must be a multiple of `bands` (`pad_to` pads one up).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=16)
def prototype(bands: int, overlap: int = 8, attenuation_db: float = 90.0) -> np.ndarray:
  """The low-pass prototype p [2 * bands * overlap + 1] (float64), Kaiser-windowed sinc with
  the cut-off that makes |P(w)|^2 + |P(pi / bands - w)|^2 closest to 1 (max deviation)."""
  from scipy import optimize
  from scipy import signal

  taps = 2 * bands * overlap + 1
  beta = signal.kaiser_beta(attenuation_db)
  grid = np.linspace(0.0, np.pi / bands, 512)

  def design(cutoff: float) -> np.ndarray:
    return signal.firwin(taps, cutoff, window=("kaiser", beta), fs=2 * np.pi)

  def deviation(cutoff: float) -> float:
    _, response = signal.freqz(design(cutoff), worN=np.concatenate([grid, np.pi / bands - grid]))
    power = np.abs(response) ** 2
    return float(np.max(np.abs(power[: len(grid)] + power[len(grid) :] - 1.0)))

  centre = np.pi / (2 * bands)
  found = optimize.minimize_scalar(
    deviation, bounds=(0.5 * centre, 1.5 * centre), method="bounded", options={"xatol": 1e-10}
  )
  return design(float(found.x))


def filters(bands: int, overlap: int = 8, attenuation_db: float = 90.0):
  """(analysis, synthesis) filters, each float32 [bands, taps]."""
  p = prototype(bands, overlap, attenuation_db)
  n = np.arange(len(p)) - (len(p) - 1) / 2.0
  k = np.arange(bands)[:, None]
  arg = (2 * k + 1) * np.pi / (2 * bands) * n[None, :]
  phase = (-1.0) ** k * np.pi / 4
  analysis = 2.0 * p * np.cos(arg + phase)
  synthesis = 2.0 * p * np.cos(arg - phase)
  return analysis.astype(np.float32), synthesis.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PQMF:
  """The filter bank of `bands` bands (module doc). `overlap`: prototype taps per band and
  side (longer: sharper bands, more delay); `attenuation_db`: its stop-band attenuation."""

  bands: int = 16
  overlap: int = 8
  attenuation_db: float = 90.0

  @property
  def taps(self) -> int:
    return 2 * self.bands * self.overlap + 1

  def _filters(self):
    return filters(self.bands, self.overlap, self.attenuation_db)

  def pad_to(self, y):
    """y [..., samples] zero-padded at the end to a multiple of `bands`."""
    extra = (-y.shape[-1]) % self.bands
    return jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, extra)]) if extra else y

  def analysis(self, y):
    """[B, samples] (a multiple of bands) -> [B, bands, samples / bands]."""
    y = jnp.asarray(y, jnp.float32)
    if y.shape[-1] % self.bands:
      raise ValueError(
        f"PQMF.analysis: {y.shape[-1]} samples is not a multiple of {self.bands} bands "
        "(PQMF.pad_to pads it)"
      )
    h, _ = self._filters()
    half = (self.taps - 1) // 2
    # 'same' alignment: the filters are centred (linear phase), so the bank's delay is split
    # evenly between analysis and synthesis and disappears.
    x = jnp.pad(y[:, None, :], ((0, 0), (0, 0), (half, half)))
    kernel = jnp.asarray(h[:, None, ::-1].copy())  # convolution, not correlation
    return jax.lax.conv_general_dilated(
      x, kernel, (self.bands,), "VALID", dimension_numbers=("NCH", "OIH", "NCH")
    )

  def synthesis(self, sub):
    """[B, bands, frames] -> [B, frames * bands]."""
    sub = jnp.asarray(sub, jnp.float32)
    if sub.shape[1] != self.bands:
      raise ValueError(f"PQMF.synthesis: expected [B, {self.bands}, frames], got {sub.shape}")
    _, g = self._filters()
    b, m, frames = sub.shape
    up = jnp.zeros((b, m, frames * m), jnp.float32).at[:, :, ::m].set(sub)
    half = (self.taps - 1) // 2
    x = jnp.pad(up, ((0, 0), (0, 0), (half, half)))
    kernel = jnp.asarray(g[None, :, ::-1].copy())  # [1, bands, taps]: filter and sum
    out = jax.lax.conv_general_dilated(
      x, kernel, (1,), "VALID", dimension_numbers=("NCH", "OIH", "NCH")
    )
    return m * out[:, 0, :]
