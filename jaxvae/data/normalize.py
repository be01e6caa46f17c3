"""Feature normalization: the statistics a store keeps (training split only) and the one
`normalize_features` / `denormalize` pair that training, eval, generation and the Python API
apply (`data.normalize`: 'global', 'band' (per mel band), 'minmax' (per example), 'none')."""

from __future__ import annotations

import numpy as np

from jaxvae import errors


def statistics(features: np.ndarray, rows) -> dict:
  """Normalization statistics from the training split only (no peeking at validation)."""
  train = [
    i for i, r in enumerate(rows) if r["split"] == "train" and not r["bad"] and not r.get("augment")
  ]
  train = train or list(range(len(rows)))
  total, sq, count, mins, maxs = 0.0, 0.0, 0, [], []
  band_total, band_sq, band_count = 0.0, 0.0, 0  # per band: features are [..., bands, frames]
  for i in range(0, len(train), 256):
    x = np.asarray(features[train[i : i + 256]], np.float64)
    total += x.sum()
    sq += np.square(x).sum()
    count += x.size
    mins.append(x.reshape(len(x), -1).min(1))
    maxs.append(x.reshape(len(x), -1).max(1))
    rest = tuple(a for a in range(x.ndim) if a != x.ndim - 2)  # [N, bands, frames]
    band_total = band_total + x.sum(axis=rest)
    band_sq = band_sq + np.square(x).sum(axis=rest)
    band_count += x.size // x.shape[-2]
  mean = total / count
  band_mean = band_total / band_count
  band_var = np.maximum(band_sq / band_count - band_mean**2, 0.0)
  return {
    "mean": mean,
    "std": float(np.sqrt(max(sq / count - mean**2, 1e-12))),
    "min_mean": float(np.concatenate(mins).mean()),
    "max_mean": float(np.concatenate(maxs).mean()),
    "band_mean": band_mean.tolist(),
    # A band that (nearly) never varies, such as a mel band above the content, is centred,
    # not scaled up: relative to the bands' mean variance, whatever the feature's units.
    "band_std": np.where(
      band_var > BAND_VAR_FLOOR * max(float(band_var.mean()), 1e-30), np.sqrt(band_var), 1.0
    ).tolist(),
  }


BAND_VAR_FLOOR = 1e-6  # of the bands' mean variance


def _band(stats: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The per-band mean and std (float32) shaped to broadcast over features `x` [..., bands,
  frames]."""
  if "band_mean" not in stats:
    raise errors.DataError(
      "config key 'data.normalize' is 'band', but these feature statistics have no per-band "
      "values (the store or run was made before 'band' existed): rebuild the store with "
      "--mode=preprocess, or use data.normalize=global"
    )
  bands = len(stats["band_mean"])
  if x.ndim < 2 or x.shape[-2] != bands:
    raise errors.DataError(
      f"features of shape {list(x.shape)} for data.normalize='band': expected [..., {bands} "
      "bands, frames] (the store's band count)"
    )
  shape = [1] * x.ndim
  shape[-2] = bands
  mean, std = (np.asarray(stats[k], np.float32).reshape(shape) for k in ("band_mean", "band_std"))
  return mean, std


def normalize_features(x: np.ndarray, stats: dict, method: str) -> np.ndarray:
  """Applied the same way at train, eval and generation time."""
  if method == "global":
    return (x - stats["mean"]) / stats["std"]
  if method == "band":
    mean, std = _band(stats, x)
    return ((x - mean) / std).astype(x.dtype, copy=False)
  if method == "minmax":  # per example (the original puzzle VQ-VAE scaled per batch)
    axes = tuple(range(1, x.ndim)) if x.ndim > 2 else None
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-8)
  return x


def denormalize(x: np.ndarray, stats: dict, method: str) -> np.ndarray:
  """Back to feature units; min-max uses the training set's mean range."""
  if method == "global":
    return x * stats["std"] + stats["mean"]
  if method == "band":
    mean, std = _band(stats, x)
    return (x * std + mean).astype(x.dtype, copy=False)
  if method == "minmax":
    return x * (stats["max_mean"] - stats["min_mean"]) + stats["min_mean"]
  return x
