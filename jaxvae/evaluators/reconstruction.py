"""Reconstruction error in units that compare across models: the log-spectral distance in dB
and the spectral convergence between input and reconstruction, after undoing each model's
normalization and scale (`sampling.prior.to_power`), so that a model trained on globally
standardized dB and one trained on per-clip min-max features are measured alike.

    LSD(x, y) = mean over frames of sqrt(mean over mel bands of (10 log10 P_x - 10 log10 P_y)^2)
    SC(x, y) = ||sqrt(P_x) - sqrt(P_y)||_F / ||sqrt(P_x)||_F      (mel magnitudes)

Per-clip min-max normalization cannot be undone exactly (the clip's range is not kept); it is
undone with the training set's mean range and the result says so.
"""

from __future__ import annotations

import numpy as np

from jaxvae.sampling import prior

AMIN = 1e-10  # the power floor of the dB features (audio.features)


def log_spectral_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Per example `[B]`, dB, from mel power `[B, bands, frames]`."""
  d = 10.0 * (np.log10(np.maximum(p, AMIN)) - np.log10(np.maximum(q, AMIN)))
  return np.sqrt(np.mean(d**2, axis=1)).mean(axis=-1)


def spectral_convergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Per example `[B]`: relative Frobenius error of the mel magnitudes."""
  a, b = np.sqrt(np.maximum(p, 0.0)), np.sqrt(np.maximum(q, 0.0))
  axes = tuple(range(1, a.ndim))
  return np.sqrt(np.sum((a - b) ** 2, axis=axes)) / np.maximum(
    np.sqrt(np.sum(a**2, axis=axes)), 1e-12
  )


def evaluate(x: np.ndarray, recon: np.ndarray, stats: dict, config) -> dict:
  """LSD and SC of normalized inputs and reconstructions `[B, bands, frames]`, with the
  conditions that make them comparable; None values where the features are not mel."""
  d = config.data
  out = {
    "examples": int(len(x)),
    "recon_mse_normalized": float(np.mean((np.asarray(recon) - np.asarray(x)) ** 2)),
  }
  if d.feature != "mel":
    return out | {"lsd_db": None, "spectral_convergence": None, "units": f"{d.feature}: no LSD"}
  p = prior.to_power(x, stats, config)
  q = prior.to_power(np.asarray(recon).reshape(np.shape(x)), stats, config)
  undo = {
    "global": "exact",
    "band": "exact",
    "none": "exact",
    "minmax": "approximate (per-clip min-max undone with the training set's mean range)",
  }[d.normalize]
  return out | {
    "lsd_db": float(log_spectral_distance(p, q).mean()),
    "spectral_convergence": float(spectral_convergence(p, q).mean()),
    "units": f"mel power from {d.scale} features, normalization '{d.normalize}' undone: {undo}",
  }
