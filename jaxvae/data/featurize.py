"""Which features a store holds and how they are computed: the parameters that name a store
(`feature_params`, its key's content) and the jitted waveform batch -> feature batch function
(log-mel in dB or log1p, MFCC; `data.db_reference` 'peak' or absolute)."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.audio import features

STORE_VERSION = 1  # of what a store holds: part of every store's key


def feature_params(config) -> dict:
  """Everything that changes what a store holds, its arrays and the statistics in its
  manifest (and nothing that does not)."""
  d = config.data
  return {
    "sr": d.sr,
    "n_fft": d.n_fft,
    "hop_length": d.hop_length,
    "n_mels": d.n_mels,
    "feature": d.feature,
    "n_mfcc": d.n_mfcc,
    "scale": d.scale,
    "seconds": d.seconds,
    "example_mode": d.example_mode,
    "segment_hop_seconds": d.segment_hop_seconds,
    "on_error": d.on_error,
    "min_seconds": d.min_seconds,
    "version": STORE_VERSION,
    # Only when not the default, so that existing stores keep their keys.
    # (`get`: a run saved before the key existed was made with 'absolute'.)
    **({"db_reference": "peak"} if d.get("db_reference", "absolute") == "peak" else {}),
    # 'band' reads per-band statistics that stores made before it lack: its own store.
    **({"normalize": "band"} if d.normalize == "band" else {}),
    # Only when used, so stores made without augmentation keep their keys.
    **({"augment": json.loads(d.augment.to_json())} if d.augment.copies > 0 else {}),
    "split": {"val_fraction": d.val_fraction, "seed": d.split_seed},
  }


AMIN, TOP_DB = 1e-10, 80.0  # librosa's power_to_db defaults
SILENCE_REF = AMIN * 10.0 ** (TOP_DB / 10.0)  # under 'peak', silence sits at -TOP_DB


def mel_db(y, params: dict, fft_dtype: str = features.FFT_DTYPE):
  """Waveforms [..., samples] -> the log-mel features of a mel store with `params` (dB, or
  log1p): traceable, so the vocoder computes its input inside its jitted step exactly as the
  store computed the VAEs' inputs."""
  power = features.mel_spectrogram(
    y,
    power=2.0,
    sr=params["sr"],
    n_fft=params["n_fft"],
    hop_length=params["hop_length"],
    n_mels=params["n_mels"],
    fft_dtype=fft_dtype,
  )
  if params["scale"] == "log1p":
    return jnp.log1p(power)
  return _db(power, params.get("db_reference", "absolute") == "peak")


def _db(power, peak: bool):
  # 'peak': each example's loudest bin is 0 dB (librosa's ref=np.max), so the features do
  # not depend on the recording's level. Except silence (a bad file's stand-in): by
  # librosa's rule it would be 0 dB everywhere, as loud as anything; its reference is
  # SILENCE_REF instead, which puts it at the floor, -TOP_DB.
  ref = 1.0
  if peak:
    top = power.max(axis=(-2, -1), keepdims=True)
    ref = jnp.where(top > AMIN, top, SILENCE_REF)
  return features.power_to_db(power, ref=ref, amin=AMIN, top_db=TOP_DB)


@functools.lru_cache(maxsize=8)
def _feature_fn(params_json: str):
  """A jitted waveform batch -> feature batch function for one parameter set."""
  p = json.loads(params_json)

  @jax.jit
  def fn(y):
    if p["feature"] == "waveform":  # the vocoder's store: the clips themselves, one 'band'
      return y[:, None, :]
    if p["feature"] == "mfcc":
      common = dict(sr=p["sr"], n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"])
      mel = features.mel_spectrogram(y, power=2.0, norm="slaney", **common)
      return features.mfcc(
        S=_db(mel, p.get("db_reference") == "peak"), sr=p["sr"], n_mfcc=p["n_mfcc"]
      )
    return mel_db(y, p)

  return fn


def compute_features(waves: np.ndarray, params: dict) -> np.ndarray:
  """[B, samples] float32 -> [B, n_features, frames] float32, on the default JAX device."""
  return np.asarray(_feature_fn(json.dumps(params, sort_keys=True))(waves), np.float32)
