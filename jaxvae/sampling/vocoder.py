"""A trained vocoder as a function: features in a store's units (dB or log1p mel) -> waveform.

`load(workdir)` restores a vocoder run's generator (best checkpoint, else the newest latest);
`Vocoder.check_serves(config)` refuses, in one line naming both settings, a model whose features
differ from the ones the vocoder was trained on; `Vocoder(mel)` vocodes on the default JAX
device (one compiled program per input shape). `prior.features_to_audio(..., vocoder=...)` is
the one place the audio models call it; Griffin-Lim stays the default when no vocoder is given.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import errors
from jaxvae.models import vocoder as vocoder_lib
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.variants import registry
from jaxvae.variants import vocoder as vocoder_variant


@dataclasses.dataclass
class Vocoder:
  """A restored vocoder: `settings` are the feature settings it reads (`data.sr`, ...)."""

  workdir: str
  settings: dict
  cfg: vocoder_lib.VocoderConfig
  params: Any  # the generator's
  step: int
  frames: int = 0  # the frames of one clip of its run (what --mode=export lays out for)

  @property
  def sr(self) -> int:
    return int(self.settings["sr"])

  def check_serves(self, config, what: str = "this model") -> None:
    """ConfigError unless `config`'s features are the ones this vocoder reads."""
    if config.data.feature != "mel":
      raise errors.ConfigError(
        f"the vocoder in '{self.workdir}' turns mel features into audio; {what} has "
        f"data.feature='{config.data.feature}'"
      )
    theirs = vocoder_variant.feature_settings(config)
    differ = [k for k in self.settings if str(theirs[k]) != str(self.settings[k])]
    if differ:
      pairs = ", ".join(f"data.{k} {theirs[k]} vs {self.settings[k]}" for k in differ)
      raise errors.ConfigError(
        f"the vocoder in '{self.workdir}' does not read {what}'s features ({pairs}; model vs "
        "vocoder): train one with --config.vocoder.features_from=<the model's workdir>"
      )

  def __call__(self, mel, length: int | None = None) -> np.ndarray:
    """Features [n_mels, frames] or [B, n_mels, frames] in the store's units -> float32
    waveform(s) [samples] or [B, samples], `length` samples (default hop * (frames - 1)).
    Non-finite features are a DataError; silence (the floor everywhere) gives near-silence."""
    x = np.asarray(mel, np.float32)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.ndim != 3 or x.shape[1] != self.cfg.n_mels:
      raise errors.DataError(
        f"features of shape {list(np.shape(mel))}: the vocoder reads [B, {self.cfg.n_mels} "
        "mel bands, frames]"
      )
    if not np.all(np.isfinite(x)):
      raise errors.DataError("the features given to the vocoder hold NaN or infinite values")
    y = np.array(_generate(self.cfg)(self.params, jnp.asarray(x)))
    y[_silent(x, self.cfg.scale)] = 0.0  # a clip at the floor everywhere is silence, exactly
    if length is not None:
      y = np.asarray(vocoder_lib.fit_length(y, int(length)))
    return y[0] if single else y


SILENCE_DB = -80.0  # at or below: the feature floor (TOP_DB under the loudest bin, or amin)


def _silent(x: np.ndarray, scale: str) -> np.ndarray:
  """[B] True where an example's features are one constant at the floor (a silent clip)."""
  flat = x.reshape(len(x), -1)
  floor = 0.0 if scale == "log1p" else SILENCE_DB
  return (flat.max(1) - flat.min(1) < 1e-3) & (flat.max(1) <= floor)


@functools.lru_cache(maxsize=8)
def _generate(cfg: vocoder_lib.VocoderConfig):
  model = vocoder_lib.VocosGenerator(cfg)
  return jax.jit(lambda params, mel: model.apply({"params": params}, mel))


def for_config(config) -> Vocoder | None:
  """The vocoder `generate.vocoder` names, checked against the run's features; None for
  Griffin-Lim (no vocoder named)."""
  path = str(config.generate.get("vocoder", ""))
  if not path:
    return None
  voc = _cached_load(os.path.abspath(path))
  voc.check_serves(config)
  return voc


@functools.lru_cache(maxsize=4)
def _cached_load(workdir: str) -> Vocoder:
  return load(workdir)


def load(workdir: str, which: str = "best") -> Vocoder:
  """The vocoder trained in `workdir` (`which`: its best checkpoint, else the latest; or
  'latest'); CheckpointError / ConfigError naming it otherwise."""
  workdir = os.fspath(workdir)
  try:
    raw = writer_lib.read_run(workdir)["config"]
  except KeyError:
    raise errors.CheckpointError(f"cannot read '{workdir}': its run file has no config") from None
  except errors.CheckpointError as e:
    raise errors.CheckpointError(
      f"vocoder: {e} (a vocoder is trained with --config=configs/vocoder.py)"
    ) from None
  if raw.get("model", {}).get("name") != "vocoder":
    raise errors.ConfigError(
      f"'{workdir}' holds a '{raw.get('model', {}).get('name')}' run, not a vocoder "
      "(configs/vocoder.py)"
    )
  config = registry.config_from_dict(raw, workdir)
  cfg = vocoder_variant.model_config(config.model)
  template = _template(cfg)
  # The EMA of the generator's weights when the run kept one (vocoder.ema_decay).
  averaged = {"generator": "ema_gen"}
  source = workdir if which == "best" else os.path.join(workdir, "checkpoints")
  try:
    params, _, step = checkpoint.restore_weights(
      source, template, "vocoder", averaged, with_step=True
    )
  except errors.ConfigError:
    raise errors.CheckpointError(
      f"vocoder '{workdir}' has no checkpoint that restores (train it first, or see its "
      "best/ and checkpoints/ folders)"
    ) from None
  return Vocoder(
    workdir=workdir,
    settings=vocoder_variant.feature_settings(config),
    cfg=cfg,
    params=params["generator"],
    step=step,
    frames=1 + int(round(config.data.seconds * config.data.sr)) // int(config.data.hop_length),
  )


def _template(cfg: vocoder_lib.VocoderConfig) -> checkpoint.WeightsTemplate:
  """Parameter shapes of the generator and discriminators (nothing computed)."""
  model = vocoder_lib.Vocoder(cfg)
  samples = cfg.hop_length * 8
  batch = {"x": jnp.zeros((1, 1, samples), jnp.float32), "mask": jnp.ones((1,))}
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))
  return checkpoint.weights_template({"params": shapes["params"]})
