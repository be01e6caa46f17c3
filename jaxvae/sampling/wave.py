"""A trained waveform VAE as functions: waveforms in, latents out, latents back to waveforms,
offline or chunk by chunk (`jaxvae.load(workdir)` returns one for a `wave_vae` run).

    model = jaxvae.load("runs/wave")
    z = model.encode(y)                       # [B, samples] at model.sr -> [B, frames, latent]
    y_hat = model.decode(z)                   # -> [B, frames * hop]
    path = model.interpolate(y_a, y_b, 5)     # [5, samples]: decoded from a latent path
    for chunk in model.stream_decode(z, 4):   # causal models: 4 latent frames at a time
        play(chunk)                           # the stream lags decode by model.latency samples
    for z_chunk in model.stream_encode(y, 1): # a live input, one latent frame at a time
        ...                                   # encode of y delayed by model.latency samples
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
from jaxvae.models import wave_vae as wave_lib
from jaxvae.sampling import interpolate as interpolate_lib
from jaxvae.training import checkpoint
from jaxvae.variants import wave_vae as wave_variant


@dataclasses.dataclass
class WaveModel:
  workdir: str
  config: Any
  cfg: wave_lib.WaveVAEConfig
  params: Any  # {'generator': ...}
  step: int

  @property
  def module(self) -> wave_lib.WaveVAE:
    return wave_lib.WaveVAE(self.cfg)

  @property
  def sr(self) -> int:
    return int(self.config.data.sr)

  @property
  def hop(self) -> int:
    """Samples per latent frame."""
    return self.cfg.hop

  @property
  def latency(self) -> int:
    return self.cfg.latency

  def _waves(self, y) -> np.ndarray:
    y = np.asarray(y, np.float32)
    y = y[None] if y.ndim == 1 else y
    if y.ndim != 2:
      raise errors.DataError(f"waveforms of shape {list(np.shape(y))}: expected [B, samples]")
    if not np.all(np.isfinite(y)):
      raise errors.DataError("the waveforms hold NaN or infinite values")
    return y

  def encode(self, y) -> np.ndarray:
    """Posterior means [B, frames, latent_dim] of waveforms [B, samples] (padded with zeros
    to a multiple of `hop`)."""
    mu, _ = _encode(self.cfg)(self.params, jnp.asarray(self._waves(y)))
    return np.asarray(mu)

  def decode(self, z, seed: int = 0) -> np.ndarray:
    """Latents [B, frames, latent_dim] -> waveforms [B, frames * hop] (noise from `seed`)."""
    z = self._latents(z)
    return np.asarray(_decode(self.cfg)(self.params, jnp.asarray(z), jax.random.PRNGKey(seed)))

  @property
  def is_codec(self) -> bool:
    """A quantized bottleneck (`model.bottleneck` rvq / fsq / lfq): codes, no prior."""
    return self.cfg.bottleneck != "gaussian"

  def reconstruct(self, y, n_quantizers: int | None = None) -> np.ndarray:
    """The decoding of the posterior means (a codec: of the codes, with the first
    `n_quantizers` residual levels)."""
    y = self._waves(y)
    if self.is_codec:
      return self.decode_codes(self.encode_codes(y, n_quantizers))[:, : y.shape[-1]]
    return self.decode(self.encode(y))[:, : y.shape[-1]]

  def encode_codes(self, y, n_quantizers: int | None = None) -> np.ndarray:
    """A codec's int32 codes [B, frames] (rvq: [B, frames, levels], -1 past `n_quantizers`)."""
    self._codec("encode_codes")
    if n_quantizers is not None and not 1 <= int(n_quantizers) <= self.cfg.num_quantizers:
      raise errors.DataError(
        f"n_quantizers={n_quantizers}: the model has {self.cfg.num_quantizers} codebooks"
      )
    fn = _codes(self.cfg, None if n_quantizers is None else int(n_quantizers))
    return np.asarray(fn(self.params, jnp.asarray(self._waves(y))), np.int32)

  def lookup(self, codes) -> np.ndarray:
    """A codec's codes -> the vectors its decoder reads [B, frames, latent_dim]."""
    self._codec("lookup")
    return np.asarray(_lookup(self.cfg)(self.params, jnp.asarray(codes, jnp.int32)))

  def decode_codes(self, codes, seed: int = 0) -> np.ndarray:
    return self.decode(self.lookup(codes), seed)

  def _codec(self, what: str) -> None:
    if not self.is_codec:
      raise errors.ConfigError(
        f"{what}: '{self.workdir}' has a Gaussian latent (model.bottleneck 'gaussian'); "
        "codes need a codec (model.bottleneck rvq, fsq or lfq)"
      )

  def sample(self, n: int, frames: int, seed: int = 0) -> np.ndarray:
    """Waveforms of `n` latents of `frames` frames drawn from the prior N(0, I)."""
    if self.is_codec:
      raise errors.ConfigError(f"sample: '{self.workdir}' is a codec, which has no prior")
    n, frames = _positive("n", n), _positive("frames", frames)
    z = jax.random.normal(jax.random.PRNGKey(seed), (n, frames, self.cfg.latent_dim))
    return self.decode(np.asarray(z), seed)

  def interpolate(self, a, b, steps: int = 5, method: str = "slerp", seed: int = 0) -> np.ndarray:
    """Waveforms `[steps, samples]` decoded from `steps` latent sequences on the path from the
    encoding of waveform `a` to that of `b` (each `[samples]` or `[1, samples]` at `sr`; the
    longer is cut to the shorter): posterior means (a codec: its quantized vectors), each
    sequence taken as one vector, 'slerp' (the great circle) or 'lerp'."""
    ya, yb = self._waves(a), self._waves(b)
    if len(ya) != 1 or len(yb) != 1:
      raise errors.DataError(
        f"interpolate takes one waveform each, got {len(ya)} and {len(yb)} rows"
      )
    n = min(ya.shape[1], yb.shape[1])
    y = np.concatenate([ya[:, :n], yb[:, :n]])
    z = self.lookup(self.encode_codes(y)) if self.is_codec else self.encode(y)
    path = interpolate_lib.interpolation_path(z[0].ravel(), z[1].ravel(), int(steps), method)
    return self.decode(path.reshape(len(path), *z.shape[1:]), seed)[:, :n]

  def to_audio(self, y) -> np.ndarray:
    """The model's outputs as audio: they are waveforms already (`[B, samples]` at `sr`), so
    they come back as they are (checked): `model.to_audio(model.reconstruct(y))` gives audio
    for the mel models and this one alike."""
    return self._waves(y)

  def _latents(self, z) -> np.ndarray:
    z = np.asarray(z, np.float32)
    if z.ndim != 3 or z.shape[-1] != self.cfg.latent_dim:
      raise errors.DataError(
        f"latents of shape {list(np.shape(z))}: expected [B, frames, {self.cfg.latent_dim}]"
      )
    return z

  def _causal(self) -> None:
    if not self.cfg.causal:
      raise errors.ConfigError(
        f"'{self.workdir}' was trained with model.causal=False: its convolutions look ahead "
        "and cannot stream; train a causal one (configs/wave_vae.py's presets are)"
      )

  def init_stream(self, batch: int = 1) -> dict:
    """The zero state of a decoding stream of `batch` waveforms (causal models only)."""
    self._causal()
    return wave_lib.init_cache(self.module, {"params": self.params}, batch)

  def init_encode_stream(self, batch: int = 1) -> dict:
    """The zero state of an encoding stream of `batch` waveforms (causal models only)."""
    self._causal()
    return wave_lib.init_encode_cache(self.module, {"params": self.params}, batch)

  def stream_encode_step(self, y_chunk, cache: dict):
    """One chunk of waveforms [B, n * hop] -> (posterior means [B, n, latent_dim] (a codec:
    the encoder's vectors), the next state)."""
    y = self._waves(y_chunk)
    if y.shape[1] % self.hop:
      raise errors.DataError(
        f"a chunk of {y.shape[1]} samples: a streaming encoder takes whole latent frames of "
        f"{self.hop} samples"
      )
    _same_batch(len(y), cache)
    (mu, _), cache = _stream_encode(self.cfg)(self.params, jnp.asarray(y), cache)
    return np.asarray(mu), cache

  def stream_encode(self, y, chunk: int = 1):
    """Yields the latents of waveforms [B, samples] `chunk` latent frames (chunk x hop
    samples) at a time, as a live input would give them; the samples are padded with zeros
    to whole frames. The stream encodes the input delayed by `latency` samples (its frames
    are `encode` of the waveform with `latency` zeros in front)."""
    y = self._waves(y)
    y = np.pad(y, ((0, 0), (0, (-y.shape[1]) % self.hop)))
    cache = self.init_encode_stream(y.shape[0])
    step = _positive("chunk", chunk) * self.hop
    for start in range(0, y.shape[1], step):
      mu, cache = self.stream_encode_step(y[:, start : start + step], cache)
      yield mu

  def stream_step(self, z_chunk, cache: dict, seed: int = 0):
    """One chunk [B, n, latent_dim] -> (samples [B, n * hop], the next state)."""
    _same_batch(np.shape(z_chunk)[0], cache)
    fn = _stream(self.cfg)
    out, cache = fn(self.params, jnp.asarray(z_chunk, jnp.float32), cache, jax.random.PRNGKey(seed))
    return np.asarray(out), cache

  def stream_decode(self, z, chunk: int = 1, seed: int = 0):
    """Yields the waveform of latents [B, frames, latent_dim] `chunk` frames at a time, as a
    real-time player would ask for it; the samples lag `decode` by `latency`."""
    z, chunk = self._latents(z), _positive("chunk", chunk)
    cache = self.init_stream(z.shape[0])
    for start in range(0, z.shape[1], chunk):
      out, cache = self.stream_step(z[:, start : start + chunk], cache, seed)
      yield out


def _positive(name: str, value) -> int:
  """An integer >= 1 (a count of samples, frames or latent frames a call)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise errors.ConfigError(f"{name}={value!r}: expected an integer >= 1")
  return int(value)


def _same_batch(batch: int, cache: dict) -> None:
  """A stream's state is per waveform: its batch must be the chunk's."""
  state = int(np.shape(cache["pqmf"])[0])
  if batch != state:
    raise errors.DataError(
      f"a chunk of {batch} waveform(s) for a stream state of {state} (init_stream / "
      "init_encode_stream take the batch size)"
    )


@functools.lru_cache(maxsize=8)
def _encode(cfg):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(lambda params, y: model.apply({"params": params}, y, method="encode"))


@functools.lru_cache(maxsize=16)
def _codes(cfg, n_quantizers):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(
    lambda params, y: model.apply({"params": params}, y, n_quantizers, method="encode_codes")
  )


@functools.lru_cache(maxsize=8)
def _lookup(cfg):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(lambda params, codes: model.apply({"params": params}, codes, method="lookup"))


@functools.lru_cache(maxsize=8)
def _decode(cfg):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(
    lambda params, z, key: model.apply({"params": params}, z, key, method="decode_wave")
  )


@functools.lru_cache(maxsize=8)
def _stream(cfg):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(
    lambda params, z, cache, key: model.apply(
      {"params": params}, z, cache, key, method="stream_decode"
    )
  )


@functools.lru_cache(maxsize=8)
def _stream_encode(cfg):
  model = wave_lib.WaveVAE(cfg)
  return jax.jit(
    lambda params, y, cache: model.apply({"params": params}, y, cache, method="stream_encode")
  )


def load(workdir: str, config, which: str = "best") -> WaveModel:
  """The waveform VAE of `workdir` (its config already read) at its best or latest
  checkpoint; CheckpointError naming it when none restores."""
  cfg = wave_variant.model_config(config.model)
  model = wave_lib.WaveVAE(cfg)
  samples = cfg.hop * 2
  batch = {"x": jnp.zeros((1, 1, samples), jnp.float32), "mask": jnp.ones((1,))}
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))
  template = checkpoint.weights_template({"params": shapes["params"]})
  source = workdir if which == "best" else os.path.join(workdir, "checkpoints")
  try:
    params, _, step = checkpoint.restore_weights(source, template, "wave_vae", with_step=True)
  except errors.ConfigError:
    raise errors.CheckpointError(
      f"'{workdir}' has no checkpoint that restores (train it first, or see its best/ and "
      "checkpoints/ folders)"
    ) from None
  return WaveModel(workdir, config, cfg, {"generator": params["generator"]}, step)
