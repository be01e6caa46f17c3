"""Use a trained model from Python: `jaxvae.load(workdir)`.

    import jaxvae
    model = jaxvae.load("runs/conv")              # the best checkpoint ('latest' also works)
    x = model.features("clip.wav")                # [1, n_mels, frames], normalized as trained
    mu, logvar = model.encode(x)                  # [1, latent_dim] each
    y = model.to_audio(model.reconstruct(x))      # [1, samples] at the run's rate
    path = model.interpolate(x_a, x_b, steps=5)   # [5, n_mels, frames]

The model knows its config, data spec, feature settings and normalization statistics from
the workdir (`jaxvae_run.json`, written when training starts; a workdir from before that is
read through its feature store). Inputs are batch-first numpy: feature arrays `[B, n_mels,
frames]` (a single `[n_mels, frames]` too), waveforms `[B, samples]` with `sr=`, or paths of
audio files. Every function is jitted once per input shape and cached on the model; nothing is
global. Audio VAEs get `AudioModel`, the VQ-VAE `VQModel`. Every public method checks its
arguments before any work: a mistake (a count that is not a positive integer, a NaN, an array
of the wrong shape or dtype, an unknown label value, a waveform without its rate, a MIDI run)
raises `jaxvae.errors.ConfigError` or `DataError` with one clear message naming the argument.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pretty_midi

from jaxvae import errors
from jaxvae.audio import decode as decode_lib
from jaxvae.data import dataset as dataset_lib
from jaxvae.data import featurize
from jaxvae.data import normalize as normalize_lib
from jaxvae.data import tokens as token_store
from jaxvae.data.spec import DataSpec
from jaxvae.evaluators import music as music_eval
from jaxvae.losses import divergence
from jaxvae.losses import sequence
from jaxvae.sampling import interpolate as interpolate_lib
from jaxvae.sampling import prior
from jaxvae.sampling import tokens as tokens_lib
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.sampling import wave as wave_lib
from jaxvae.symbolic import tokenizers
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.variants import registry

WHICH = ("best", "latest")


def load(workdir: str, which: str = "best", vocoder=None):
  """The trained model of `workdir` at its best (`train.best_metric`, by default the lowest
  validation loss) or latest checkpoint. Raises CheckpointError / ConfigError / DataError
  with one clear message.

  `vocoder`: a vocoder's workdir (or a loaded one) that the audio model's `to_audio` uses
  instead of Griffin-Lim; it must read the model's features (ConfigError naming both
  settings otherwise). A vocoder's own workdir loads as a `sampling.vocoder.Vocoder`: features
  in the store's units -> waveforms; a waveform VAE's as a `sampling.wave.WaveModel`
  (encode, decode, reconstruct, sample, stream_decode)."""
  if not isinstance(workdir, (str, os.PathLike)):
    raise errors.ConfigError(f"workdir={workdir!r}: expected the path of a workdir")
  workdir = os.fspath(workdir)
  if not isinstance(which, str) or which not in WHICH:
    raise errors.ConfigError(f"which={which!r}; expected one of {', '.join(WHICH)}")
  if vocoder is not None and not isinstance(vocoder, (str, os.PathLike, vocoder_lib.Vocoder)):
    raise errors.ConfigError(f"vocoder={vocoder!r}: expected a vocoder's workdir or None")
  info = writer_lib.read_run(workdir)
  config = registry.config_from_dict(info["config"], workdir)
  variant = registry.get(config.model.name)
  source = variant.waveform_from(config)
  if source:
    if vocoder is not None:
      raise errors.ConfigError(
        f"'{workdir}' makes waveforms itself (model.name '{config.model.name}'): load it "
        "without vocoder="
      )
    if source == "latent":  # the waveform VAE or codec
      return wave_lib.load(workdir, config, which)
    return vocoder_lib.load(workdir, which)
  voc = _vocoder(vocoder, config, workdir) if vocoder is not None else None
  data = info.get("data", {})
  if "stats" not in data or "label_values" not in data:  # a run from before they were saved
    store = dataset_lib.open_store(config, progress=False)
    data = dict(data, stats=store.manifest["stats"], label_values=store.label_values)
    data["shape"] = list(store.shape)
  spec = DataSpec(
    input_shape=tuple(data["shape"]),
    labels={k: tuple(v) for k, v in data["label_values"].items()},
    lyrics_dim=data["lyrics_dim"] if "lyrics_dim" in data else dataset_lib.lyrics_dim(config),
    tokenizer=tokenizers.make(token_store.tokenizer_record(data))
    if variant.data_kind == "midi"
    else None,
  )
  example = spec.example_batch(config.train.batch_size)
  compiled = builder.build(config, spec, example, steps_per_epoch=1, total_steps=1)
  state, _ = checkpoint.restore(workdir, compiled.state, which)
  if variant.data_kind == "midi":
    if voc is not None:
      raise errors.ConfigError(f"vocoder=: '{workdir}' holds a MIDI model, which makes no audio")
    return MidiModel(config, compiled.model, state, spec, data["stats"], workdir)
  cls = VQModel if variant.latent_kind(config) == "codes" else AudioModel
  model = cls(config, compiled.model, state, spec, data["stats"], workdir)
  model.vocoder = voc
  return model


def _vocoder(vocoder, config, what: str):
  """A vocoder argument (a workdir or a loaded `Vocoder`) checked against `config`'s
  features."""
  if isinstance(vocoder, vocoder_lib.Vocoder):
    voc = vocoder
  elif isinstance(vocoder, (str, os.PathLike)):
    voc = vocoder_lib.load(os.fspath(vocoder))
  else:
    raise errors.ConfigError(f"vocoder={vocoder!r}: expected a vocoder's workdir or None")
  voc.check_serves(config, f"'{what}'")
  return voc


# Argument checks. Every public method runs them before any work, so a bad argument is one
# ConfigError (a bad setting) or DataError (bad array data) naming the argument, the value it
# got and what is expected, never an error from inside numpy or XLA.


def _scalar(value, kinds: str):
  """`value` as a numpy scalar when it is one number of a dtype kind in `kinds`, else None
  (bools, strings, arrays and None are not numbers here)."""
  if isinstance(value, (bool, np.bool_)):
    return None
  try:
    a = np.asarray(value)
  except (TypeError, ValueError):
    return None
  return a[()] if a.ndim == 0 and a.dtype.kind in kinds else None


def _count(name: str, value, low: int = 1, high: int | None = None) -> int:
  """An integer in [low, high] (no upper bound when `high` is None)."""
  v = _scalar(value, "iu")
  if v is None or v < low or (high is not None and v > high):
    expected = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise errors.ConfigError(f"{name}={value!r}: expected an integer {expected}")
  return int(v)


def _seed(name: str, value, span: int = 1) -> int:
  """A random seed: an integer that `jax.random.PRNGKey` takes (`span` seeds from it on)."""
  v = _scalar(value, "iu")
  if v is None or not -(2**63) <= int(v) <= 2**63 - span:
    raise errors.ConfigError(f"{name}={value!r}: expected an integer seed in [-2**63, 2**63)")
  return int(v)


def _real(
  name: str, value, low: float = -math.inf, high: float = math.inf, low_open: bool = False
) -> float:
  """A finite number in [low, high] (`low_open`: in (low, high])."""
  v = _scalar(value, "iuf")
  ok = v is not None and math.isfinite(float(v))
  ok = ok and (float(v) > low if low_open else float(v) >= low) and float(v) <= high
  if not ok:
    if high < math.inf:
      expected = f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low > -math.inf:
      expected = f" {'>' if low_open else '>='} {low:g}"
    else:
      expected = ""
    raise errors.ConfigError(f"{name}={value!r}: expected a finite number{expected}")
  return float(v)


def _choice(name: str, value, options: tuple[str, ...]) -> str:
  if not isinstance(value, str) or value not in options:
    raise errors.ConfigError(
      f"{name}={value!r}: expected one of {', '.join(repr(o) for o in options)}"
    )
  return value


def _text(name: str, value, what: str) -> str:
  if not isinstance(value, str):
    raise errors.ConfigError(f"{name}={value!r}: expected {what} (a string)")
  return value


def _array(name: str, value, integer: bool = False, finite: bool = True) -> np.ndarray:
  """`value` as a non-empty numpy array of real numbers (`integer`: of integers); `finite`:
  without NaN or infinities."""
  try:
    a = np.asarray(value)
  except (TypeError, ValueError) as e:  # ragged lists and the like
    raise errors.DataError(f"{name} cannot be read as an array ({e})") from None
  if a.size == 0:
    raise errors.DataError(f"{name} of shape {list(a.shape)}: expected at least one value")
  kinds = (jnp.integer,) if integer else (jnp.integer, jnp.floating)
  if not any(jnp.issubdtype(a.dtype, k) for k in kinds):
    what = "integers" if integer else "real numbers (integer or float)"
    got = f"dtype {a.dtype}" if hasattr(value, "dtype") else f"type {type(value).__name__}"
    raise errors.DataError(f"{name} of {got}: expected an array of {what}")
  if finite and not integer and not np.isfinite(a.astype(np.float32)).all():
    raise errors.DataError(f"{name} holds NaN or infinite values: expected finite numbers")
  return a


def _latents(name: str, value, dim: int) -> np.ndarray:
  """Finite float32 latents `[B, dim]` (one `[dim]` too)."""
  z = _array(name, value).astype(np.float32)
  z = z[None] if z.ndim == 1 else z
  if z.ndim != 2 or z.shape[1] != dim:
    raise errors.DataError(
      f"{name} of shape {list(np.shape(value))}: expected [B, {dim}], a batch of latents"
    )
  return z


def _is_paths(value) -> bool:
  """A path, or a non-empty list or tuple of paths."""
  if isinstance(value, (str, os.PathLike)):
    return True
  return (
    isinstance(value, (list, tuple))
    and bool(value)
    and all(isinstance(v, (str, os.PathLike)) for v in value)
  )


def _variables(variables) -> None:
  if not isinstance(variables, Mapping) or "params" not in variables:
    raise errors.ConfigError(
      f"variables of type {type(variables).__name__}: expected the model's variables, a "
      "dict with 'params' (model.variables)"
    )


def _traced(name: str, value, tail: tuple[int, ...], integer: bool = False) -> None:
  """An array argument of a pure function, maybe traced: its rank, trailing shape and dtype
  are known while tracing and checked here (its values cannot be)."""
  shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
  kinds = (jnp.integer,) if integer else (jnp.integer, jnp.floating)
  ok = shape is not None and len(shape) == 1 + len(tail) and tuple(shape[1:]) == tail
  if not ok or not any(jnp.issubdtype(dtype, k) for k in kinds):
    got = f"shape {list(shape)}, dtype {dtype}" if shape is not None else type(value).__name__
    what = "integers" if integer else "real numbers"
    raise errors.DataError(
      f"{name} ({got}): expected {what} of shape [B, {', '.join(map(str, tail))}]"
    )


class Model:
  """What every loaded model has: its config, data spec, normalization statistics (audio),
  step and variables, and a cache of its jitted functions."""

  def __init__(self, config, module, state, spec: DataSpec, stats: dict, workdir: str):
    self.config = config
    self.module = module
    self.spec = spec
    self.stats = stats
    self.workdir = workdir
    self.step = int(state.step)
    self.variables = jax.device_get({"params": state.params, **state.model_state})
    self._cache: dict[str, Any] = {}
    self.vocoder = None  # audio models: what `to_audio` uses instead of Griffin-Lim

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}({self.config.model.name}, step {self.step}, input "
      f"{list(self.spec.input_shape)}, labels {list(self.spec.labels)}, from '{self.workdir}')"
    )

  # The other family's method names, refused with one ConfigError saying what this model is.
  OTHER_FAMILY: tuple[str, ...] = ()
  WHAT_IT_IS = ("", "")

  def __getattr__(self, name: str):
    if name in type(self).OTHER_FAMILY:
      kind, does = type(self).WHAT_IT_IS
      raise errors.ConfigError(
        f"{name}: '{self.workdir}' holds {kind} ({self.config.model.name}), which {does}"
      )
    raise AttributeError(name)

  def _jit(self, name: str, fn):
    if name not in self._cache:
      self._cache[name] = jax.jit(fn)
    return self._cache[name]


class _AudioBase(Model):
  """Audio in, normalized features through the model, audio out."""

  OTHER_FAMILY = ("generate", "generate_tokens", "encode_midi", "interpolate_midi", "nll")
  OTHER_FAMILY += ("tokens",)
  WHAT_IT_IS = (
    "an audio model",
    "reads and writes spectrograms, not MIDI; use features, encode, decode, sample",
  )

  @property
  def sr(self) -> int:
    return int(self.config.data.sr)

  def features(self, audio, sr: int | None = None) -> np.ndarray:
    """Paths (one or a list), or waveforms `[samples]` / `[B, samples]` at rate `sr`, ->
    normalized features `[B, n_mels, frames]`, exactly as the feature store makes them
    (resampled to the run's rate, padded or cropped to `data.seconds`)."""
    return self._features(audio, self._sr_arg(sr), "audio")

  def _sr_arg(self, sr) -> int | None:
    return None if sr is None else _count("sr", sr)

  def _features(self, audio, sr: int | None, name: str) -> np.ndarray:
    d = self.config.data
    if _is_paths(audio):
      paths = [audio] if isinstance(audio, (str, os.PathLike)) else list(audio)
      waves = []
      for path in paths:
        examples, _ = decode_lib.load_examples(
          os.fspath(path), sr=d.sr, mode="pad_crop", seconds=d.seconds, on_error="raise"
        )
        waves.append(examples[0])
      y = np.stack(waves)
    else:
      y = self._waveforms(name, audio)
      if sr is None:
        raise errors.DataError(
          f"a waveform needs its sample rate: pass sr= (the model was trained at {d.sr} Hz)"
        )
      y = decode_lib.resample(y, sr, d.sr)
      n = int(round(d.seconds * d.sr))
      y = np.stack([decode_lib.fix_length(row, n) for row in y])
    feats = featurize.compute_features(y.astype(np.float32), featurize.feature_params(self.config))
    return normalize_lib.normalize_features(feats, self.stats, d.normalize).astype(np.float32)

  @staticmethod
  def _waveforms(name: str, audio) -> np.ndarray:
    """Finite float32 waveforms `[B, samples]` (one `[samples]` too)."""
    if isinstance(audio, (list, tuple)) and any(isinstance(v, (str, os.PathLike)) for v in audio):
      raise errors.DataError(f"{name} mixes paths and other values: expected audio file paths")
    y = _array(name, audio).astype(np.float32)
    if y.ndim not in (1, 2):
      raise errors.DataError(
        f"{name} of shape {list(y.shape)}: expected a waveform [samples] or waveforms [B, samples]"
      )
    return np.atleast_2d(y)

  def _feature_batch(self, x: np.ndarray) -> np.ndarray | None:
    """Float32 features `[B, *input_shape]` from an array of that shape (or of one example),
    else None."""
    shape = tuple(self.spec.input_shape)
    if x.shape == shape:
      return x[None].astype(np.float32)
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
      return x.astype(np.float32)
    return None

  def _as_features(self, x, sr: int | None = None, name: str = "x") -> np.ndarray:
    """Normalized features `[B, *input_shape]` from features, waveforms or paths."""
    sr = self._sr_arg(sr)
    if _is_paths(x):
      return self._features(x, None, name)
    if isinstance(x, (list, tuple)) and any(isinstance(v, (str, os.PathLike)) for v in x):
      raise errors.DataError(f"{name} mixes paths and other values: expected audio file paths")
    a = _array(name, x)
    feats = self._feature_batch(a)
    if feats is not None:
      return feats
    if a.ndim <= 2:
      return self._features(a, sr, name)
    shape = tuple(self.spec.input_shape)
    raise errors.DataError(
      f"{name} of shape {list(a.shape)}: expected features [B, {', '.join(map(str, shape))}], "
      "waveforms [B, samples] with sr=, or audio file paths"
    )

  def _condition(self, condition) -> None:
    """A label value the model is conditioned on, or None."""
    if condition is None:
      return
    if not isinstance(condition, str):
      raise errors.ConfigError(f"condition={condition!r}: expected a label value (a string)")
    prior.label_batch(self.spec.labels, self.config, condition, 1)  # raises for a bad value

  def _batch(self, x: np.ndarray, condition: str | None = None, lyrics=None) -> dict:
    """A model batch of features `x`: labels unknown but `condition`; a multimodal model's
    lyrics embeddings `[B, lyrics_dim]` when given (rows of NaN, or none: no lyrics)."""
    n = len(x)
    batch = prior.label_batch(self.spec.labels, self.config, condition, n)
    batch["x"] = jnp.asarray(x)
    if self.spec.lyrics_dim:
      emb = np.zeros((n, self.spec.lyrics_dim), np.float32)
      mask = np.zeros((n,), np.float32)
      if lyrics is not None:
        given = self._lyrics(lyrics)
        if given.shape != emb.shape:
          raise errors.DataError(
            f"lyrics of shape {list(given.shape)}: expected embeddings [{n}, "
            f"{self.spec.lyrics_dim}] (one row per input, from the run's text encoder)"
          )
        mask = (~np.isnan(given).any(1)).astype(np.float32)
        emb = np.where(mask[:, None] > 0, given, 0.0).astype(np.float32)
      batch["lyrics"], batch["lyrics_mask"] = jnp.asarray(emb), jnp.asarray(mask)
    elif lyrics is not None:
      raise errors.ConfigError(f"model '{self.config.model.name}' does not read lyrics")
    return batch

  def _lyrics(self, lyrics) -> np.ndarray:
    """Float32 lyrics embeddings, one or a batch (their count is checked against the inputs'
    in `_batch`): NaN (a clip without lyrics) is allowed, infinities are not."""
    if not self.spec.lyrics_dim:
      raise errors.ConfigError(f"model '{self.config.model.name}' does not read lyrics")
    given = np.atleast_2d(_array("lyrics", lyrics, finite=False).astype(np.float32))
    if given.ndim != 2:
      raise errors.DataError(
        f"lyrics of shape {list(given.shape)}: expected embeddings [B, "
        f"{self.spec.lyrics_dim}] (one row per input, from the run's text encoder)"
      )
    if np.isinf(given).any():
      raise errors.DataError("lyrics holds infinite values: expected finite numbers or NaN rows")
    return given

  def to_audio(self, features, n_iter: int = 32, vocoder=None) -> np.ndarray:
    """Normalized mel features `[B, n_mels, frames]` -> waveforms `[B, samples]` at `sr`:
    through `vocoder` (a vocoder's workdir or a loaded one; default the one given to
    `jaxvae.load`), else Griffin-Lim with librosa's NNLS filterbank inverse (`n_iter`
    iterations), as --mode=generate."""
    n_iter = _count("n_iter", n_iter)
    voc = _vocoder(vocoder, self.config, self.workdir) if vocoder is not None else self.vocoder
    x = self._feature_batch(_array("features", features))
    if x is None:
      shape = tuple(self.spec.input_shape)
      raise errors.DataError(
        f"features of shape {list(np.shape(features))}: expected normalized features "
        f"[B, {', '.join(map(str, shape))}]"
      )
    store = _Stats(self.stats)
    n = int(round(self.config.data.seconds * self.sr))  # the clip length the features came from
    return np.stack(
      [prior.features_to_audio(f, store, self.config, n_iter, length=n, vocoder=voc) for f in x]
    )


class _Stats:
  """The part of a store `prior.features_to_audio` reads: the normalization statistics."""

  def __init__(self, stats: dict):
    self.manifest = {"stats": stats}


class AudioModel(_AudioBase):
  """A Gaussian-latent audio VAE (basic, conv, beta, conditional, VaDE, spectral, harmonic,
  multimodal)."""

  @property
  def latent_dim(self) -> int:
    return int(self.config.model.latent_dim)

  def encode(
    self, x, sr: int | None = None, condition: str | None = None, lyrics=None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and log-variance `[B, latent_dim]` each. The multimodal model also
    takes `lyrics`, embeddings `[B, lyrics_dim]` made as its run made them (a NaN row: that
    clip has none); without them it encodes the audio alone."""
    self._condition(condition)
    if lyrics is not None:
      lyrics = self._lyrics(lyrics)
    fn = self._jit("encode", self.encode_fn)
    batch = self._batch(self._as_features(x, sr), condition, lyrics)
    mu, logvar = fn(self.variables, batch)
    return np.asarray(mu, np.float32), np.asarray(logvar, np.float32)

  def decode_lyrics(self, z) -> np.ndarray:
    """The multimodal model: latents `[B, latent_dim]` -> lyrics embeddings `[B,
    lyrics_dim]` (its lyrics decoder)."""
    if not self.spec.lyrics_dim:
      raise errors.ConfigError(f"model '{self.config.model.name}' does not decode lyrics")
    z = _latents("z", z, self.latent_dim)
    return np.asarray(self._jit("decode_lyrics", self.decode_lyrics_fn)(self.variables, z))

  # The pure functions behind the methods (and what --mode=export serializes). Their
  # arguments may be traced: shapes and dtypes are checked, values cannot be.

  def encode_fn(self, variables, batch):
    """(variables, batch) -> (posterior mean, log-variance)."""
    _variables(variables)
    if not isinstance(batch, Mapping) or "x" not in batch:
      raise errors.DataError(
        f"batch of type {type(batch).__name__}: expected a dict with 'x' (and the labels)"
      )
    _traced("batch['x']", batch["x"], tuple(self.spec.input_shape))
    return self.module.apply(variables, batch, False, method=self.module.encode)

  def decode_lyrics_fn(self, variables, z):
    """(variables, latents) -> float32 lyrics embeddings (the multimodal model)."""
    _variables(variables)
    _traced("z", z, (self.latent_dim,))
    return self.module.apply(variables, z, method=self.module.decode_lyrics)

  def decode_fn(self, variables, z, batch):
    """(variables, latents, label batch) -> float32 features `[B, *input_shape]`."""
    _variables(variables)
    _traced("z", z, (self.latent_dim,))
    if not isinstance(batch, Mapping):
      raise errors.DataError(f"batch of type {type(batch).__name__}: expected a dict of labels")
    out = self.module.apply(variables, z, batch, False, method=self.module.decode)
    return out.astype(jnp.float32).reshape(z.shape[0], *self.spec.input_shape)

  def reconstruct(self, x, sr: int | None = None, condition: str | None = None) -> np.ndarray:
    """The decoding of each input's posterior mean (deterministic), normalized features
    `[B, n_mels, frames]`; `condition` defaults to no label (a conditional model's labels
    are not read from a file)."""
    self._condition(condition)
    mu, _ = self.encode(x, sr, condition)
    return self._decode(mu, condition)

  def decode(self, z, condition: str | None = None) -> np.ndarray:
    """Latents `[B, latent_dim]` -> normalized features `[B, n_mels, frames]`."""
    self._condition(condition)
    return self._decode(_latents("z", z, self.latent_dim), condition)

  def _decode(self, z, condition: str | None = None) -> np.ndarray:
    """`decode` of latents the model made (posterior means, prior draws, paths between them):
    non-finite ones mean a diverged model (NonFiniteOutputError), not a bad argument."""
    builder.require_finite(z, "latents", self.step)
    dummy = np.zeros((len(z), *self.spec.input_shape), np.float32)
    out = self._jit("decode", self.decode_fn)(
      self.variables, jnp.asarray(z), self._batch(dummy, condition)
    )
    return np.asarray(out)

  def sample(self, n: int, condition: str | None = None, seed: int = 0) -> np.ndarray:
    """`n` decodings of latents from the prior (VaDE: its learned mixture)."""
    n = _count("n", n)
    self._condition(condition)
    key = jax.random.PRNGKey(_seed("seed", seed))
    if registry.get(self.config.model.name).latent_kind(self.config) == "mixture":
      module = self.module
      z = module.apply(self.variables, n, method=module.sample_prior, rngs={"sample": key})
    else:
      z = jax.random.normal(key, (n, self.latent_dim))
    return self._decode(np.asarray(z), condition)

  def interpolate(
    self, a, b, steps: int = 5, method: str = "slerp", condition: str | None = None
  ) -> np.ndarray:
    """Decodings of `steps` latents from the posterior mean of `a` to that of `b` (one input
    each: a path, a waveform with the model's rate, or features) -> `[steps, n_mels,
    frames]`. 'slerp' follows the great circle (MusicVAE's choice for Gaussian latents),
    'lerp' the straight line."""
    steps = _count("steps", steps, 2)
    method = _choice("method", method, ("slerp", "lerp"))
    self._condition(condition)
    first_a, first_b = self._one_input("a", a), self._one_input("b", b)
    za, _ = self.encode(first_a)
    zb, _ = self.encode(first_b)
    return self._decode(interpolate_lib.interpolation_path(za[0], zb[0], steps, method), condition)

  def _one_input(self, name: str, x) -> np.ndarray:
    """The features `[1, ...]` of one input: a path, a waveform at the model's rate, or
    features (of a batch, the first)."""
    if _is_paths(x):
      return self._as_features(x, None, name)[:1]
    a = _array(name, x)
    return self._as_features(a, self.sr if a.ndim == 1 else None, name)[:1]

  def _label(self, label) -> str:
    if not isinstance(label, str) or label not in self.spec.labels:
      known = ", ".join(self.spec.labels) or "none (the data has no labels)"
      raise errors.ConfigError(f"label {label!r} is not in the data; expected one of {known}")
    return label

  def latent_means(self, label: str) -> dict[str, np.ndarray]:
    """The mean posterior mean of the training clips of each value of `label` (opens the
    run's feature store: the training data must be there)."""
    self._label(label)
    key = f"means:{label}"
    if key not in self._cache:
      store = dataset_lib.open_store(self.config, progress=False)
      rows = np.array([i for i in store.indices("train", augmented=False)], np.int64)
      x = np.stack([store.example(int(j), self.config.data.normalize)["x"] for j in rows])
      mu = np.concatenate([self.encode(x[i : i + 64])[0] for i in range(0, len(x), 64)])
      ids = store.label_array(label)[rows]
      values = store.label_values[label]
      self._cache[key] = {
        values[k]: mu[ids == k].mean(0) for k in range(len(values)) if np.any(ids == k)
      }
    return self._cache[key]

  def attribute_vector(self, label: str, source: str, target: str) -> np.ndarray:
    """The latent direction from one label value to another: the difference of the training
    clips' mean latents (`target` minus `source`), `[latent_dim]`."""
    self._label(label)
    _text("source", source, f"a value of label {label!r}")
    _text("target", target, f"a value of label {label!r}")
    means = self.latent_means(label)
    for value in (source, target):
      if value not in means:
        raise errors.ConfigError(
          f"{value!r} is not a value of label {label!r} in the training data; expected one "
          f"of {', '.join(means)}"
        )
    return (means[target] - means[source]).astype(np.float32)

  def apply_attribute(
    self, x, label: str, source: str, target: str, strength: float = 1.0, sr: int | None = None
  ) -> np.ndarray:
    """Each input's posterior mean moved by `strength` x the `source -> target` attribute
    vector, decoded: normalized features `[B, n_mels, frames]`."""
    self._label(label)
    _text("source", source, f"a value of label {label!r}")
    _text("target", target, f"a value of label {label!r}")
    strength = _real("strength", strength)
    features = self._as_features(x, sr)
    vector = self.attribute_vector(label, source, target)
    mu, _ = self.encode(features)
    return self._decode(mu + strength * vector)

  def nearest_label(self, x, label: str, sr: int | None = None) -> list[str]:
    """The value of `label` whose training mean latent is nearest each input's latent."""
    self._label(label)
    return self.nearest_label_of_latent(self.encode(x, sr)[0], label)

  def nearest_label_of_latent(self, z, label: str) -> list[str]:
    """The value of `label` whose training mean latent is nearest each latent `[B, d]`."""
    self._label(label)
    z = _latents("z", z, self.latent_dim)
    means = self.latent_means(label)
    names = list(means)
    centers = np.stack([means[n] for n in names])
    d = ((z[:, None, :] - centers[None]) ** 2).sum(-1)
    return [names[i] for i in d.argmin(1)]

  def cluster(self, x, sr: int | None = None) -> np.ndarray:
    """VaDE: the most likely mixture component of each input `[B]`."""
    if self.config.model.name != "vade":
      raise errors.ConfigError(f"model '{self.config.model.name}' has no clusters (VaDE has)")
    features = self._as_features(x, sr)
    module = self.module
    fn = self._jit("assign", lambda v, b: module.apply(v, b, train=False)["assignments"])
    out = fn(self.variables, self._batch(features))
    return np.asarray(out).argmax(-1) if np.ndim(out) > 1 else np.asarray(out)


class VQModel(_AudioBase):
  """The puzzle VQ-VAE: code grids in and out."""

  def _grid(self) -> tuple[int, ...]:
    """The code grid's (height, width), and levels for a residual quantizer."""
    levels = (int(self.module.num_quantizers),) if self.module.quantizer == "rvq" else ()
    return tuple(int(v) for v in self.module.grid) + levels

  def encode(self, x, sr: int | None = None) -> np.ndarray:
    """Code indices `[B, h, w]` (int32; a residual quantizer's `[B, h, w, levels]`)."""
    features = self._as_features(x, sr)
    fn = self._jit("codes", self.codes_fn)
    return np.asarray(fn(self.variables, self._batch(features)), np.int32)

  # The pure functions behind the methods (and what --mode=export serializes). Their
  # arguments may be traced: shapes and dtypes are checked, values cannot be.

  def codes_fn(self, variables, batch):
    """(variables, batch) -> int32 code grids."""
    _variables(variables)
    if not isinstance(batch, Mapping) or "x" not in batch:
      raise errors.DataError(
        f"batch of type {type(batch).__name__}: expected a dict with 'x' (and the labels)"
      )
    _traced("batch['x']", batch["x"], tuple(self.spec.input_shape))
    return self.module.apply(variables, batch, train=False)["codes"].astype(jnp.int32)

  def decode_codes_fn(self, variables, codes):
    """(variables, int32 code grids) -> float32 features: the codes' vectors (the quantizer's
    `lookup`) through the decoder."""
    _variables(variables)
    _traced("codes", codes, self._grid(), integer=True)
    hw = tuple(self.spec.input_shape)
    out = self.module.apply(variables, codes, hw, method="decode_codes")
    return out.astype(jnp.float32).reshape(codes.shape[0], *hw)

  def reconstruct(self, x, sr: int | None = None) -> np.ndarray:
    """The decoding of each input's quantized code grid, normalized features."""
    features = self._as_features(x, sr)
    module = self.module
    fn = self._jit("forward", lambda v, b: module.apply(v, b, train=False)["recon"])
    out = fn(self.variables, self._batch(features))
    return np.asarray(out, np.float32).reshape(len(out), *self.spec.input_shape)

  def decode_codes(self, codes) -> np.ndarray:
    """Code grids `[B, h, w]` (or one `[h, w]`) -> normalized features `[B, n_mels, frames]`."""
    given = _array("codes", codes, integer=True)
    grid = self._grid()
    given = given[None] if given.ndim == len(grid) else given
    if given.shape[1:] != grid:
      raise errors.DataError(
        f"codes of shape {list(np.shape(codes))}: expected code grids [B, "
        f"{', '.join(map(str, grid))}]"
      )
    size, low = int(self.module.codebook_size), -1 if len(grid) == 3 else 0
    if given.min() < low or given.max() >= size:
      raise errors.DataError(
        f"codes must be in [{low}, {size}); got {given.min()}..{given.max()}"
        + (" (-1: a level not used)" if low else "")
      )
    fn = self._jit("decode_codes", self.decode_codes_fn)
    return np.asarray(fn(self.variables, given.astype(np.int32)))

  def code_usage(self, x, sr: int | None = None) -> np.ndarray:
    """How often each code is used over the inputs `[codebook_size]` (a residual quantizer:
    `[levels, codebook_size]`)."""
    codes = self.encode(x, sr)
    size = int(self.module.codebook_size)
    if codes.ndim == 4:
      return np.stack([np.bincount(c[c >= 0], minlength=size) for c in np.moveaxis(codes, -1, 0)])
    return np.bincount(codes.ravel(), minlength=size)


class MidiModel(Model):
  """The symbolic Transformer(-VAE-GAN): MIDI in, MIDI out. Stage 1 (the causal language
  model) generates; stages 2 and 3 also encode a piece's windows into their hierarchical
  latent and decode from it."""

  OTHER_FAMILY = ("features", "encode", "decode", "reconstruct", "sample", "interpolate")
  OTHER_FAMILY += ("to_audio", "cluster", "decode_codes", "attribute_vector", "apply_attribute")
  WHAT_IT_IS = (
    "a MIDI model",
    "reads and writes MIDI, not audio; use generate, encode_midi, interpolate_midi or nll",
  )

  @property
  def stage(self) -> int:
    return int(self.config.model.stage)

  @property
  def latent_dim(self) -> int | None:
    """The latent width (stages 2 and 3), None for the plain language model."""
    return self.module.cfg.latent_dim if self.module.cfg.is_vae else None

  @property
  def tokenizer(self):
    """The run's tokenizer (`jaxvae.symbolic.tokenizers`: `encode`, `decode`, `vocab_size`,
    `record`), trained vocabulary included."""
    return self.spec.tokenizer

  def tokens(self, midi_file) -> np.ndarray:
    """A MIDI file (path or `pretty_midi.PrettyMIDI`) -> its int32 windows `[n, seq_len]`,
    framed as the run's token store frames them (START + tokens + END, PAD-filled)."""
    self._source("midi_file", midi_file)
    try:
      return interpolate_lib.file_windows(midi_file, self.config, self.tokenizer)
    except errors.MidiError as e:
      raise errors.DataError(str(e)) from None

  @staticmethod
  def _source(name: str, value) -> None:
    if not isinstance(value, (str, os.PathLike, pretty_midi.PrettyMIDI)):
      raise errors.DataError(
        f"{name} of type {type(value).__name__}: expected a MIDI file path or a "
        "pretty_midi.PrettyMIDI"
      )

  def _token_ids(self, name: str, value) -> np.ndarray:
    """Int32 token ids `[B, T]` (one `[T]` too), each a token of the vocabulary."""
    a = np.atleast_2d(_array(name, value, integer=True))
    vocab = self.module.cfg.vocab_size
    if a.ndim != 2:
      raise errors.DataError(f"{name} of shape {list(a.shape)}: expected token ids [B, T]")
    if a.min() < 0 or a.max() >= vocab:
      raise errors.DataError(
        f"{name} holds ids {a.min()}..{a.max()}: expected token ids in [0, {vocab})"
      )
    return a.astype(np.int32)

  def _windows(self, x, name: str = "windows") -> np.ndarray:
    """Token windows `[B, T]` from a MIDI file (path or PrettyMIDI) or int token ids."""
    if isinstance(x, (str, os.PathLike, pretty_midi.PrettyMIDI)):
      return self.tokens(x)
    if not isinstance(x, (np.ndarray, jax.Array)):
      raise errors.DataError(
        f"{name} of type {type(x).__name__}: expected a MIDI file path, a "
        "pretty_midi.PrettyMIDI or int token windows [B, seq_len] (a numpy array)"
      )
    windows = self._token_ids(name, x)
    length, longest = windows.shape[1], self.module.cfg.max_len
    if not 2 <= length <= longest:
      raise errors.DataError(
        f"{name} of shape {list(windows.shape)}: expected windows of 2 to {longest} tokens "
        f"(the run's are {self.config.data.midi.seq_len})"
      )
    return windows

  def _need_latent(self, what: str) -> None:
    if not self.module.cfg.is_vae:
      raise errors.ConfigError(
        f"{what} needs a latent space, but this is a stage {self.stage} model (the plain "
        "language model); load a stage 2 or 3 run"
      )

  _SAMPLING = ("n_tokens", "temperature", "top_k", "top_p")

  def _sampling(self, n_tokens=None, temperature=None, top_k=None, top_p=None) -> tuple:
    """The sampling settings, each given or the run's `generate` config's."""
    g = self.config.generate
    return (
      int(g.num_tokens) if n_tokens is None else _count("n_tokens", n_tokens),
      g.temperature if temperature is None else _real("temperature", temperature, 0.0),
      int(g.top_k) if top_k is None else _count("top_k", top_k, 0, self.module.cfg.vocab_size),
      g.top_p if top_p is None else _real("top_p", top_p, 0.0, 1.0, low_open=True),
    )

  def generate_tokens(
    self,
    n_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    z=None,
    num: int = 1,
    prompt=None,
  ) -> np.ndarray:
    """int32 `[B, P + n_tokens]`: the prompt (default START), then sampled ids, with the
    KV-cached sampler. Settings default to the run's `generate` config. `z` `[B, latent_dim]`
    (stages 2-3) decodes given latents, B of them; else `num` pieces from the prior."""
    n_tokens, temperature, top_k, top_p = self._sampling(n_tokens, temperature, top_k, top_p)
    seed = _seed("seed", seed)
    num = _count("num", num)
    if z is not None:
      self._need_latent("z")
      z = _latents("z", z, self.latent_dim)
      num = len(z)
    if prompt is not None:
      prompt = self._token_ids("prompt", prompt)
      if len(prompt) not in (1, num):
        raise errors.DataError(
          f"prompt of shape {list(prompt.shape)}: expected token ids [P] or [B, P] with "
          f"B = {num} (one prompt per piece)"
        )
    length = (1 if prompt is None else prompt.shape[1]) + n_tokens
    if length > self.module.cfg.max_len:
      raise errors.ConfigError(
        f"n_tokens={n_tokens}: the prompt and n_tokens make {length} tokens, more than "
        f"model.max_len = {self.module.cfg.max_len}"
      )
    try:
      out = tokens_lib.generate(
        self.module,
        self.variables,
        jax.random.PRNGKey(seed),
        num_tokens=n_tokens,
        batch_size=num,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        z=z,
        prompt=prompt,
      )
    except ValueError as e:
      raise errors.ConfigError(str(e)) from None
    return np.asarray(out, np.int32)

  def generate(
    self,
    n_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    z=None,
  ):
    """A new piece as `pretty_midi.PrettyMIDI` (one for each row of a `[B, latent_dim]` `z`:
    a list). Arguments as `generate_tokens`, which checks them."""
    rows = self.generate_tokens(n_tokens, temperature, top_k, top_p, seed, z)
    pieces = [self.tokenizer.decode(row) for row in rows]
    return pieces if z is not None and np.ndim(z) == 2 else pieces[0]

  def encode_tokens(self, windows) -> tuple[np.ndarray, np.ndarray]:
    """Token windows `[B, seq_len]` -> posterior mean and log-variance `[B, latent_dim]`."""
    self._need_latent("encode_tokens")
    windows = self._windows(windows)
    module = self.module
    fn = self._jit("encode", lambda v, t: module.apply(v, t, method=module.encode))
    mu, logvar = fn(self.variables, jnp.asarray(windows))
    return np.asarray(mu, np.float32), np.asarray(logvar, np.float32)

  def encode_midi(self, midi_file) -> tuple[np.ndarray, np.ndarray]:
    """A MIDI file -> the posterior mean and log-variance of each of its windows, `[n,
    latent_dim]` each (row 0: the opening window)."""
    self._need_latent("encode_midi")
    return self.encode_tokens(self.tokens(midi_file))

  def interpolate_midi(
    self, a, b, steps: int = 5, method: str = "slerp", seed: int = 0, **sampling
  ) -> list:
    """`steps` pieces decoded from latents on the path from the opening window of `a` to
    that of `b` (paths, PrettyMIDI, or token windows): 'slerp' (default) or 'lerp'. The
    sampling settings (`n_tokens`, `temperature`, ...) are `generate`'s."""
    self._need_latent("interpolate_midi")
    steps = _count("steps", steps, 2)
    method = _choice("method", method, ("slerp", "lerp"))
    _seed("seed", seed)
    unknown = sorted(set(sampling) - set(self._SAMPLING))
    if unknown:
      raise errors.ConfigError(
        f"{', '.join(unknown)}: not an argument of interpolate_midi; expected a, b, steps, "
        f"method, seed and the sampling settings {', '.join(self._SAMPLING)}"
      )
    self._sampling(**sampling)
    first_a, first_b = self._windows(a, "a")[:1], self._windows(b, "b")[:1]
    z = interpolate_lib.interpolation_path(
      self.encode_tokens(first_a)[0][0], self.encode_tokens(first_b)[0][0], steps, method
    )
    return self.generate(seed=seed, z=z, **sampling)

  def nll(self, midi_file, samples: int = 1, seed: int = 0, per: str = "token") -> float:
    """Nats per token (`per='note'`: per note, which compares across tokenizations) of a piece
    (all its windows). Stage 1: the exact negative log-likelihood. Stages 2-3: the negative
    ELBO (reconstruction NLL with z drawn from the posterior, `samples` draws averaged, plus
    each window's KL), an upper bound of it."""
    per = _choice("per", per, ("token", "note"))
    samples = _count("samples", samples)
    seed = _seed("seed", seed, span=samples)
    windows = self._windows(midi_file, "midi_file")
    module = self.module
    vae = module.cfg.is_vae

    def terms(variables, tokens, key):
      mask = jnp.ones((tokens.shape[0],))
      if vae:
        mu, logvar = module.apply(variables, tokens, method=module.encode)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        kl = jnp.sum(divergence.gaussian_kl(mu, logvar))
      else:
        z, kl = None, jnp.float32(0.0)
      logits = module.apply(variables, tokens[:, :-1], z, method=module.decode_tokens)
      count = jnp.sum(sequence.target_weights(tokens, mask))
      return sequence.token_terms(logits, tokens, mask)["nll"] * count, kl, count

    fn = self._jit("nll", terms)
    total = []
    for k in range(samples if vae else 1):
      nll, kl, count = fn(self.variables, jnp.asarray(windows), jax.random.PRNGKey(seed + k))
      total.append((float(nll) + float(kl)) / max(float(count), 1.0))
    if per == "note":
      value = music_eval.per_note(np.mean(total), windows, self.tokenizer)["nll_per_note"]
      if value is None:
        raise errors.DataError("midi_file holds no note: its NLL per note is undefined")
      return value
    return float(np.mean(total))
