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
global. Audio VAEs get `AudioModel`, the VQ-VAE `VQModel`; mistakes (an unknown label value,
a waveform without its rate, a MIDI run) raise `jaxvae.errors.ConfigError` or `DataError` with
one clear message.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvae import errors
from jaxvae.audio import decode as decode_lib
from jaxvae.data import dataset as dataset_lib
from jaxvae.data import store as store_lib
from jaxvae.data.spec import DataSpec
from jaxvae.sampling import prior
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.variants import registry

WHICH = ("best", "latest")


def load(workdir: str, which: str = "best"):
  """The trained model of `workdir` at its best (lowest validation loss) or latest
  checkpoint. Raises CheckpointError / ConfigError / DataError with one clear message."""
  if which not in WHICH:
    raise errors.ConfigError(f"which={which!r}; expected one of {', '.join(WHICH)}")
  info = _run_info(workdir)
  config = _config(info["config"], workdir)
  if config.data.kind != "audio":
    raise errors.ConfigError(
      f"workdir '{workdir}' holds a MIDI model ({config.model.name}); jaxvae.load serves "
      "audio models (use --mode=generate for MIDI)"
    )
  data = info.get("data", {})
  if "stats" not in data or "label_values" not in data:  # a run from before they were saved
    store = dataset_lib.open_store(config, progress=False)
    data = dict(data, stats=store.manifest["stats"], label_values=store.label_values)
    data["shape"] = list(store.shape)
  spec = DataSpec(
    input_shape=tuple(data["shape"]),
    labels={k: tuple(v) for k, v in data["label_values"].items()},
    lyrics_dim=data["lyrics_dim"] if "lyrics_dim" in data else dataset_lib.lyrics_dim(config),
  )
  example = spec.example_batch(config.train.batch_size)
  compiled = builder.build(config, spec, example, steps_per_epoch=1, total_steps=1)
  state, _ = checkpoint.restore(workdir, compiled.state, which)
  cls = VQModel if "num_codes" in config.model else AudioModel
  return cls(config, compiled.model, state, spec, data["stats"], workdir)


def _run_info(workdir: str) -> dict:
  path = os.path.join(workdir, writer_lib.MARKER)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.CheckpointError(
      f"'{workdir}' is not a jaxvae workdir (no {writer_lib.MARKER}); train one first"
    ) from None
  except (OSError, ValueError) as e:
    raise errors.CheckpointError(f"cannot read '{path}': {e}") from None


def _config(raw: dict, workdir: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(_tuples(raw))
  try:
    registry.check(config)
  except errors.ConfigError as e:
    raise errors.ConfigError(f"the config saved in '{workdir}': {e}") from None
  return config.lock()


def _tuples(value):
  """JSON lists back to the tuples configs use."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


class Model:
  """What every loaded model has: its config, data spec, normalization statistics, step and
  variables, and the conversion of inputs to normalized features."""

  def __init__(self, config, module, state, spec: DataSpec, stats: dict, workdir: str):
    self.config = config
    self.module = module
    self.spec = spec
    self.stats = stats
    self.workdir = workdir
    self.step = int(state.step)
    self.variables = jax.device_get({"params": state.params, **state.model_state})
    self._cache: dict[str, Any] = {}

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}({self.config.model.name}, step {self.step}, input "
      f"{list(self.spec.input_shape)}, labels {list(self.spec.labels)}, from '{self.workdir}')"
    )

  @property
  def sr(self) -> int:
    return int(self.config.data.sr)

  def _jit(self, name: str, fn):
    if name not in self._cache:
      self._cache[name] = jax.jit(fn)
    return self._cache[name]

  def features(self, audio, sr: int | None = None) -> np.ndarray:
    """Paths (one or a list), or waveforms `[samples]` / `[B, samples]` at rate `sr`, ->
    normalized features `[B, n_mels, frames]`, exactly as the feature store makes them
    (resampled to the run's rate, padded or cropped to `data.seconds`)."""
    d = self.config.data
    if isinstance(audio, (str, os.PathLike)) or (
      isinstance(audio, (list, tuple)) and audio and isinstance(audio[0], (str, os.PathLike))
    ):
      paths = [audio] if isinstance(audio, (str, os.PathLike)) else list(audio)
      waves = []
      for path in paths:
        examples, _ = decode_lib.load_examples(
          os.fspath(path), sr=d.sr, mode="pad_crop", seconds=d.seconds, on_error="raise"
        )
        waves.append(examples[0])
      y = np.stack(waves)
    else:
      if sr is None:
        raise errors.DataError(
          f"a waveform needs its sample rate: pass sr= (the model was trained at {d.sr} Hz)"
        )
      y = np.atleast_2d(np.asarray(audio, np.float32))
      y = decode_lib.resample(y, sr, d.sr)
      n = int(round(d.seconds * d.sr))
      y = np.stack([decode_lib.fix_length(row, n) for row in y])
    feats = store_lib.compute_features(y.astype(np.float32), store_lib.feature_params(self.config))
    return store_lib.normalize_features(feats, self.stats, d.normalize).astype(np.float32)

  def _as_features(self, x, sr: int | None = None) -> np.ndarray:
    """Normalized features `[B, *input_shape]` from features, waveforms or paths."""
    if isinstance(x, (str, os.PathLike, list, tuple)) and not isinstance(x, np.ndarray):
      if isinstance(x, (list, tuple)) and x and not isinstance(x[0], (str, os.PathLike)):
        x = np.asarray(x, np.float32)
      else:
        return self.features(x)
    x = np.asarray(x, np.float32)
    shape = tuple(self.spec.input_shape)
    if x.shape == shape:
      return x[None]
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
      return x
    if sr is not None or x.ndim <= 2:
      return self.features(x, sr)
    raise errors.DataError(
      f"input of shape {list(x.shape)}: expected features [B, {', '.join(map(str, shape))}], "
      "waveforms [B, samples] with sr=, or audio file paths"
    )

  def _batch(self, x: np.ndarray, condition: str | None = None) -> dict:
    n = len(x)
    batch = prior.label_batch(self.spec.labels, self.config, condition, n)
    batch["x"] = jnp.asarray(x)
    if self.spec.lyrics_dim:
      batch["lyrics"] = jnp.zeros((n, self.spec.lyrics_dim), jnp.float32)
      batch["lyrics_mask"] = jnp.zeros((n,), jnp.float32)
    return batch

  def to_audio(self, features, n_iter: int = 32) -> np.ndarray:
    """Normalized mel features `[B, n_mels, frames]` -> waveforms `[B, samples]` at `sr`
    (Griffin-Lim with librosa's NNLS filterbank inverse, as --mode=generate)."""
    x = np.asarray(features, np.float32)
    x = x[None] if x.ndim == 2 else x
    store = _Stats(self.stats)
    n = int(round(self.config.data.seconds * self.sr))  # the clip length the features came from
    return np.stack([prior.features_to_audio(f, store, self.config, n_iter, length=n) for f in x])


class _Stats:
  """The part of a store `prior.features_to_audio` reads: the normalization statistics."""

  def __init__(self, stats: dict):
    self.manifest = {"stats": stats}


class AudioModel(Model):
  """A Gaussian-latent audio VAE (basic, conv, beta, conditional, VaDE, spectral, harmonic,
  multimodal)."""

  @property
  def latent_dim(self) -> int:
    return int(self.config.model.latent_dim)

  def encode(
    self, x, sr: int | None = None, condition: str | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and log-variance `[B, latent_dim]` each."""
    fn = self._jit("encode", self.encode_fn)
    mu, logvar = fn(self.variables, self._batch(self._as_features(x, sr), condition))
    return np.asarray(mu, np.float32), np.asarray(logvar, np.float32)

  # The pure functions behind the methods (and what --mode=export serializes).

  def encode_fn(self, variables, batch):
    """(variables, batch) -> (posterior mean, log-variance)."""
    return self.module.apply(variables, batch, False, method=self.module.encode)

  def decode_fn(self, variables, z, batch):
    """(variables, latents, label batch) -> float32 features `[B, *input_shape]`."""
    out = self.module.apply(variables, z, batch, False, method=self.module.decode)
    return out.astype(jnp.float32).reshape(z.shape[0], *self.spec.input_shape)

  def reconstruct(self, x, sr: int | None = None, condition: str | None = None) -> np.ndarray:
    """The decoding of each input's posterior mean (deterministic), normalized features
    `[B, n_mels, frames]`; `condition` defaults to no label (a conditional model's labels
    are not read from a file)."""
    mu, _ = self.encode(x, sr, condition)
    return self.decode(mu, condition)

  def decode(self, z, condition: str | None = None) -> np.ndarray:
    """Latents `[B, latent_dim]` -> normalized features `[B, n_mels, frames]`."""
    z = np.atleast_2d(np.asarray(z, np.float32))
    if z.shape[-1] != self.latent_dim:
      raise errors.DataError(f"latents of shape {list(z.shape)}: expected [B, {self.latent_dim}]")
    dummy = np.zeros((len(z), *self.spec.input_shape), np.float32)
    out = self._jit("decode", self.decode_fn)(
      self.variables, jnp.asarray(z), self._batch(dummy, condition)
    )
    return np.asarray(out)

  def sample(self, n: int, condition: str | None = None, seed: int = 0) -> np.ndarray:
    """`n` decodings of latents from the prior (VaDE: its learned mixture)."""
    key = jax.random.PRNGKey(seed)
    if hasattr(self.module, "sample_prior"):
      module = self.module
      z = module.apply(self.variables, n, method=module.sample_prior, rngs={"sample": key})
    else:
      z = jax.random.normal(key, (n, self.latent_dim))
    return self.decode(np.asarray(z), condition)

  def interpolate(
    self, a, b, steps: int = 5, method: str = "slerp", condition: str | None = None
  ) -> np.ndarray:
    """Decodings of `steps` latents from the posterior mean of `a` to that of `b` (one input
    each: a path, a waveform with the model's rate, or features) -> `[steps, n_mels,
    frames]`. 'slerp' follows the great circle (MusicVAE's choice for Gaussian latents),
    'lerp' the straight line."""
    if method not in ("slerp", "lerp"):
      raise errors.ConfigError(f"method={method!r}; expected 'slerp' or 'lerp'")
    if steps < 2:
      raise errors.ConfigError(f"steps={steps}; expected at least 2")
    za, _ = self.encode(self._as_features(a, self.sr if np.ndim(a) == 1 else None)[:1])
    zb, _ = self.encode(self._as_features(b, self.sr if np.ndim(b) == 1 else None)[:1])
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    z = slerp(za[0], zb[0], t) if method == "slerp" else (1 - t) * za[0] + t * zb[0]
    return self.decode(z, condition)

  def latent_means(self, label: str) -> dict[str, np.ndarray]:
    """The mean posterior mean of the training clips of each value of `label` (opens the
    run's feature store: the training data must be there)."""
    if label not in self.spec.labels:
      raise errors.ConfigError(
        f"label {label!r} is not in the data; expected one of {', '.join(self.spec.labels)}"
      )
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
    mu, _ = self.encode(x, sr)
    return self.decode(mu + strength * self.attribute_vector(label, source, target))

  def nearest_label(self, x, label: str, sr: int | None = None) -> list[str]:
    """The value of `label` whose training mean latent is nearest each input's latent."""
    return self.nearest_label_of_latent(self.encode(x, sr)[0], label)

  def nearest_label_of_latent(self, z, label: str) -> list[str]:
    """The value of `label` whose training mean latent is nearest each latent `[B, d]`."""
    means = self.latent_means(label)
    names = list(means)
    centers = np.stack([means[n] for n in names])
    z = np.atleast_2d(np.asarray(z, np.float32))
    d = ((z[:, None, :] - centers[None]) ** 2).sum(-1)
    return [names[i] for i in d.argmin(1)]

  def cluster(self, x, sr: int | None = None) -> np.ndarray:
    """VaDE: the most likely mixture component of each input `[B]`."""
    if self.config.model.name != "vade":
      raise errors.ConfigError(f"model '{self.config.model.name}' has no clusters (VaDE has)")
    module = self.module
    fn = self._jit("assign", lambda v, b: module.apply(v, b, train=False)["assignments"])
    out = fn(self.variables, self._batch(self._as_features(x, sr)))
    return np.asarray(out).argmax(-1) if np.ndim(out) > 1 else np.asarray(out)


class VQModel(Model):
  """The puzzle VQ-VAE: code grids in and out."""

  def encode(self, x, sr: int | None = None) -> np.ndarray:
    """Code indices `[B, h, w]` (int32)."""
    fn = self._jit("codes", self.codes_fn)
    return np.asarray(fn(self.variables, self._batch(self._as_features(x, sr))), np.int32)

  # The pure functions behind the methods (and what --mode=export serializes).

  def codes_fn(self, variables, batch):
    """(variables, batch) -> int32 code grids."""
    return self.module.apply(variables, batch, train=False)["codes"].astype(jnp.int32)

  def decode_codes_fn(self, variables, codes):
    """(variables, int32 code grids) -> float32 features: codebook rows through the decoder."""
    q = jnp.take(_codebook(variables), codes, axis=0)
    hw = tuple(self.spec.input_shape)
    out = self.module.apply(
      variables, q, method=lambda m, q: m.decoder(q.astype(m.dtype), hw, train=False)
    )
    return out.astype(jnp.float32).reshape(codes.shape[0], *hw)

  def reconstruct(self, x, sr: int | None = None) -> np.ndarray:
    """The decoding of each input's quantized code grid, normalized features."""
    module = self.module
    fn = self._jit("forward", lambda v, b: module.apply(v, b, train=False)["recon"])
    out = fn(self.variables, self._batch(self._as_features(x, sr)))
    return np.asarray(out, np.float32).reshape(len(out), *self.spec.input_shape)

  def decode_codes(self, codes) -> np.ndarray:
    """Code grids `[B, h, w]` (or one `[h, w]`) -> normalized features `[B, n_mels, frames]`."""
    codes = np.asarray(codes, np.int32)
    codes = codes[None] if codes.ndim == 2 else codes
    size = int(self.config.model.num_codes)
    if codes.min() < 0 or codes.max() >= size:
      raise errors.DataError(f"codes must be in [0, {size}); got {codes.min()}..{codes.max()}")
    return np.asarray(self._jit("decode_codes", self.decode_codes_fn)(self.variables, codes))

  def code_usage(self, x, sr: int | None = None) -> np.ndarray:
    """How often each code is used over the inputs `[codebook_size]`."""
    codes = self.encode(x, sr)
    size = int(self.config.model.num_codes)
    return np.bincount(codes.ravel(), minlength=size)


def _codebook(variables):
  """The VQ codebook among a model's variables (in params, or in the EMA statistics)."""
  for collection in variables.values():
    book = collection.get("vq", {}).get("codebook") if isinstance(collection, dict) else None
    if book is not None:
      return book
  raise errors.ConfigError("the model's variables hold no 'vq' codebook")


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation between vectors `a` and `b` at fractions `t` `[T, 1]`; the
  straight line where they are (anti)parallel."""
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  cos = float(np.dot(a, b) / max(na * nb, 1e-12))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if omega < 1e-4 or abs(np.pi - omega) < 1e-4:
    return ((1 - t) * a + t * b).astype(np.float32)
  return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)
