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
from jaxvae.losses import divergence
from jaxvae.losses import sequence
from jaxvae.sampling import interpolate as interpolate_lib
from jaxvae.sampling import prior
from jaxvae.sampling import tokens as tokens_lib
from jaxvae.symbolic import midi
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.variants import registry

WHICH = ("best", "latest")


def load(workdir: str, which: str = "best"):
  """The trained model of `workdir` at its best (`train.best_metric`, by default the lowest
  validation loss) or latest checkpoint. Raises CheckpointError / ConfigError / DataError
  with one clear message."""
  if which not in WHICH:
    raise errors.ConfigError(f"which={which!r}; expected one of {', '.join(WHICH)}")
  info = _run_info(workdir)
  config = _config(info["config"], workdir)
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
  if config.data.kind == "midi":
    cls = MidiModel
  else:
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
        given = np.atleast_2d(np.asarray(lyrics, np.float32))
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
    fn = self._jit("encode", self.encode_fn)
    batch = self._batch(self._as_features(x, sr), condition, lyrics)
    mu, logvar = fn(self.variables, batch)
    return np.asarray(mu, np.float32), np.asarray(logvar, np.float32)

  def decode_lyrics(self, z) -> np.ndarray:
    """The multimodal model: latents `[B, latent_dim]` -> lyrics embeddings `[B,
    lyrics_dim]` (its lyrics decoder)."""
    if not self.spec.lyrics_dim:
      raise errors.ConfigError(f"model '{self.config.model.name}' does not decode lyrics")
    z = np.atleast_2d(np.asarray(z, np.float32))
    return np.asarray(self._jit("decode_lyrics", self.decode_lyrics_fn)(self.variables, z))

  # The pure functions behind the methods (and what --mode=export serializes).

  def encode_fn(self, variables, batch):
    """(variables, batch) -> (posterior mean, log-variance)."""
    return self.module.apply(variables, batch, False, method=self.module.encode)

  def decode_lyrics_fn(self, variables, z):
    """(variables, latents) -> float32 lyrics embeddings (the multimodal model)."""
    return self.module.apply(variables, z, method=self.module.decode_lyrics)

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
    interpolate_lib.interpolation_path(
      np.zeros(1), np.zeros(1), steps, method
    )  # check before any work
    za, _ = self.encode(self._as_features(a, self.sr if np.ndim(a) == 1 else None)[:1])
    zb, _ = self.encode(self._as_features(b, self.sr if np.ndim(b) == 1 else None)[:1])
    return self.decode(interpolate_lib.interpolation_path(za[0], zb[0], steps, method), condition)

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


class VQModel(_AudioBase):
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

  def tokens(self, midi_file) -> np.ndarray:
    """A MIDI file (path or `pretty_midi.PrettyMIDI`) -> its int32 windows `[n, seq_len]`,
    framed as the run's token store frames them (START + tokens + END, PAD-filled)."""
    try:
      return interpolate_lib.file_windows(midi_file, self.config)
    except errors.MidiError as e:
      raise errors.DataError(str(e)) from None

  def _windows(self, x) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
      return np.atleast_2d(x).astype(np.int32)
    return self.tokens(x)

  def _need_latent(self, what: str) -> None:
    if not self.module.cfg.is_vae:
      raise errors.ConfigError(
        f"{what} needs a latent space, but this is a stage {self.stage} model (the plain "
        "language model); load a stage 2 or 3 run"
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
    g = self.config.generate
    if z is not None:
      self._need_latent("z")
      z = np.atleast_2d(np.asarray(z, np.float32))
      if z.shape[1] != self.latent_dim:
        raise errors.DataError(f"z of shape {list(z.shape)}: expected [B, {self.latent_dim}]")
      num = len(z)
    try:
      out = tokens_lib.generate(
        self.module,
        self.variables,
        jax.random.PRNGKey(seed),
        num_tokens=int(g.num_tokens if n_tokens is None else n_tokens),
        batch_size=num,
        temperature=g.temperature if temperature is None else temperature,
        top_k=int(g.top_k if top_k is None else top_k),
        top_p=g.top_p if top_p is None else top_p,
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
    a list). Arguments as `generate_tokens`."""
    rows = self.generate_tokens(n_tokens, temperature, top_k, top_p, seed, z)
    pieces = [midi.decode(row) for row in rows]
    return pieces if z is not None and np.ndim(z) == 2 else pieces[0]

  def encode_tokens(self, windows) -> tuple[np.ndarray, np.ndarray]:
    """Token windows `[B, seq_len]` -> posterior mean and log-variance `[B, latent_dim]`."""
    self._need_latent("encode_tokens")
    module = self.module
    fn = self._jit("encode", lambda v, t: module.apply(v, t, method=module.encode))
    mu, logvar = fn(self.variables, jnp.asarray(self._windows(windows)))
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
    z = interpolate_lib.interpolation_path(
      self.encode_tokens(self._windows(a)[:1])[0][0],
      self.encode_tokens(self._windows(b)[:1])[0][0],
      steps,
      method,
    )
    return self.generate(seed=seed, z=z, **sampling)

  def nll(self, midi_file, samples: int = 1, seed: int = 0) -> float:
    """Nats per token of a piece (all its windows). Stage 1: the exact negative
    log-likelihood. Stages 2-3: the negative ELBO (reconstruction NLL with z drawn from the
    posterior, `samples` draws averaged, plus each window's KL), an upper bound of it."""
    windows = self._windows(midi_file)
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
    for k in range(max(1, samples) if vae else 1):
      nll, kl, count = fn(self.variables, jnp.asarray(windows), jax.random.PRNGKey(seed + k))
      total.append((float(nll) + float(kl)) / max(float(count), 1.0))
    return float(np.mean(total))


def _codebook(variables):
  """The VQ codebook among a model's variables (in params, or in the EMA statistics)."""
  for collection in variables.values():
    book = collection.get("vq", {}).get("codebook") if isinstance(collection, dict) else None
    if book is not None:
      return book
  raise errors.ConfigError("the model's variables hold no 'vq' codebook")
