"""A RAVE-style waveform VAE: a PQMF split into sub-bands, a strided convolutional encoder to a
low-rate Gaussian latent, and a decoder with a waveform, a loudness and a noise branch, back
through the PQMF; optionally causal, so that the decoder runs chunk by chunk with cached
convolution state (`stream_decode`, and `stream_encode` for the encoder) and gives what it
gives offline.

Shapes: waveform [B, samples] -> PQMF [B, frames * ratio_product, bands] -> encoder (a conv to
`channels`, then per ratio r a residual block of dilated convolutions and a convolution of
stride r doubling the channels) -> mu, logvar [B, frames, latent_dim], one latent frame per
`hop` = bands x prod(ratios) samples. The decoder mirrors it (per ratio in reverse: nearest
upsampling by r, a convolution halving the channels, a residual block) and ends in three
heads per sub-band sample: tanh(waveform) x sigmoid(loudness) + noise x sigmoid(noise
level); the noise is uniform in [-1, 1), drawn per absolute sample position from the
'noise' key, so a chunk draws the same noise as the whole (RAVE's noise generator shapes
filtered noise per band; here each PQMF band is one noise band). PQMF synthesis gives the
waveform.

Causal (`causal=True`): every convolution looks back only (left padding), strided ones
included. `stream_decode(z_chunk, cache)` decodes chunks of any number of latent frames with
the caches of every convolution and of the PQMF, whose synthesis it applies causally: the
stream lags the offline decoding (`decode_wave`, centred PQMF, aligned with the input) by
`latency` = (taps - 1) / 2 samples and otherwise equals it. `stream_encode(y_chunk, cache)`
encodes chunks of whole latent frames of samples the same way: the PQMF analysis runs
causally, so the streamed latents are `encode` of the input delayed by `latency` samples.

The discriminators are the vocoder's (`models.vocoder.Discriminators`, multi-period and
multi-resolution STFT) for the adversarial phase. Parameters: {'generator': {'encoder',
'decoder'}, 'discriminator'}.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.audio import pqmf as pqmf_lib
from jaxvae.models import quantizers
from jaxvae.models import vocoder as vocoder_lib


@dataclasses.dataclass(frozen=True)
class WaveVAEConfig:
  bands: int = 16
  channels: int = 32  # after the first convolution; doubled by each strided one
  ratios: tuple[int, ...] = (4, 2, 2)
  latent_dim: int = 16
  # The bottleneck: 'gaussian' (a VAE), or a quantizer of `models.quantizers` (a codec):
  # 'rvq' (num_quantizers codebooks of num_codes, quantizer dropout, lookup_dim > 0 for
  # factorized cosine codes), 'fsq' (latent_dim = len(fsq_levels)) or 'lfq' (latent_dim bits).
  bottleneck: str = "gaussian"
  num_codes: int = 1024
  num_quantizers: int = 8
  quantizer_dropout: float = 0.5
  lookup_dim: int = 0
  fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
  commitment_cost: float = 0.25
  kernel: int = 3
  dilations: tuple[int, ...] = (1, 3)  # of each residual block's convolutions
  causal: bool = False
  pqmf_overlap: int = 8
  # The vocoder's discriminators
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)
  period_channels: tuple[int, ...] = (16, 64, 128, 128)
  resolutions: tuple[int, ...] = (512, 1024, 2048)
  resolution_channels: int = 16

  @property
  def hop(self) -> int:
    """Samples per latent frame."""
    return self.bands * math.prod(self.ratios)

  @property
  def pqmf(self) -> pqmf_lib.PQMF:
    return pqmf_lib.PQMF(self.bands, self.pqmf_overlap)

  @property
  def latency(self) -> int:
    """Samples the causal output lags the input (the PQMF's half length); 0 otherwise."""
    return (self.pqmf.taps - 1) // 2 if self.causal else 0


class Conv(nn.Module):
  """A 1-D convolution over [B, T, C] that pads 'same' or, causal, on the left only; with a
  `cache` (causal only: the last (kernel - 1) x dilation input frames seen), it continues a
  stream: returns (y, the new cache)."""

  features: int
  kernel: int
  stride: int = 1
  dilation: int = 1
  causal: bool = False

  @nn.compact
  def __call__(self, x, cache=None):
    span = (self.kernel - 1) * self.dilation
    conv = nn.Conv(
      self.features,
      (self.kernel,),
      strides=(self.stride,),
      kernel_dilation=(self.dilation,),
      padding="VALID",
    )
    if not self.causal:
      left = span // 2
      return conv(jnp.pad(x, ((0, 0), (left, span - left), (0, 0)))), None
    past = jnp.zeros((x.shape[0], span, x.shape[2]), x.dtype) if cache is None else cache
    full = jnp.concatenate([past, x], axis=1)
    return conv(full), full[:, full.shape[1] - span :, :]

  def cache_shape(self, batch: int, channels: int) -> tuple[int, ...]:
    return (batch, (self.kernel - 1) * self.dilation, channels)


class ResidualBlock(nn.Module):
  """x + conv(leaky_relu(conv_dilated(leaky_relu(x)))) per dilation."""

  channels: int
  kernel: int
  dilations: tuple[int, ...]
  causal: bool

  @nn.compact
  def __call__(self, x, caches=None):
    new = []
    for i, d in enumerate(self.dilations):
      c = None if caches is None else caches[i]
      h, c = Conv(self.channels, self.kernel, dilation=d, causal=self.causal)(
        nn.leaky_relu(x, 0.2), c
      )
      x = x + nn.Dense(self.channels)(nn.leaky_relu(h, 0.2))
      new.append(c)
    return x, new


LOGVAR_START = -6.0  # sigma ~0.05 at initialization


class Encoder(nn.Module):
  cfg: WaveVAEConfig

  @nn.compact
  def __call__(self, bands, caches=None):
    """Sub-bands [B, T, bands] -> ((mu, logvar) [B, T / prod(ratios), latent_dim], the new
    caches); with `caches` (causal), one chunk of a stream (T a multiple of prod(ratios))."""
    cfg = self.cfg
    caches = caches or {}
    new = {}
    x, new["in"] = Conv(cfg.channels, 7, causal=cfg.causal)(bands, caches.get("in"))
    width = cfg.channels
    for i, r in enumerate(cfg.ratios):
      x, new[f"res{i}"] = ResidualBlock(width, cfg.kernel, cfg.dilations, cfg.causal)(
        x, caches.get(f"res{i}")
      )
      width *= 2
      # Kernel 2r, stride r, 2r - 1 frames of padding: T frames in, T / r out.
      x, new[f"down{i}"] = Conv(width, 2 * r, stride=r, causal=cfg.causal)(
        nn.leaky_relu(x, 0.2), caches.get(f"down{i}")
      )
    x = nn.leaky_relu(x, 0.2)
    if cfg.bottleneck != "gaussian":  # the vectors a quantizer reads: no variance
      x, new["out"] = Conv(cfg.latent_dim, 3, causal=cfg.causal)(x, caches.get("out"))
      return (x, None), new
    x, new["out"] = Conv(2 * cfg.latent_dim, 3, causal=cfg.causal)(x, caches.get("out"))
    # The log-variance starts near LOGVAR_START, not 0: with unit noise on small initial
    # means the decoder learns from the noise and the posterior collapses (BUILD_NOTES.md).
    return (x[..., : cfg.latent_dim], x[..., cfg.latent_dim :] + LOGVAR_START), new


class Decoder(nn.Module):
  """Latent [B, frames, latent_dim] -> sub-band samples [B, frames * prod(ratios), bands];
  with `caches` (causal), one chunk of a stream: returns (samples, new caches)."""

  cfg: WaveVAEConfig

  @nn.compact
  def __call__(self, z, noise, caches=None):
    cfg = self.cfg
    caches = caches or {}
    new = {}
    width = cfg.channels * 2 ** len(cfg.ratios)
    x, new["in"] = Conv(width, 7, causal=cfg.causal)(z, caches.get("in"))
    for i, r in enumerate(reversed(cfg.ratios)):
      x = jnp.repeat(nn.leaky_relu(x, 0.2), r, axis=1)  # nearest upsampling: no state
      width //= 2
      x, new[f"up{i}"] = Conv(width, 2 * r + 1, causal=cfg.causal)(x, caches.get(f"up{i}"))
      x, new[f"res{i}"] = ResidualBlock(width, cfg.kernel, cfg.dilations, cfg.causal)(
        x, caches.get(f"res{i}")
      )
    x = nn.leaky_relu(x, 0.2)
    heads, new["out"] = Conv(3 * cfg.bands, 7, causal=cfg.causal)(x, caches.get("out"))
    wave, loud, level = jnp.split(heads, 3, axis=-1)
    out = jnp.tanh(wave) * nn.sigmoid(loud) + noise * nn.sigmoid(level - 2.0)
    return out, new


def position_noise(key, start, length: int, bands: int):
  """Uniform [-1, 1) noise [length, bands] for sub-band sample positions start .. start +
  length - 1, each position's from its own key: the same whichever chunk asks for it."""
  positions = start + jnp.arange(length)
  draw = lambda p: jax.random.uniform(jax.random.fold_in(key, p), (bands,), minval=-1.0)
  return jax.vmap(draw)(positions)


class Autoencoder(nn.Module):
  """The generator side: {'encoder', 'decoder'} and, for a codec, 'quantizer'."""

  cfg: WaveVAEConfig

  def setup(self):
    self.encoder = Encoder(self.cfg)
    self.decoder = Decoder(self.cfg)
    self.quantizer = make_quantizer(self.cfg)

  def __call__(self, bands, z, noise):
    if self.quantizer is not None:
      self.quantizer(z, train=False)
    return self.encoder(bands)[0], self.decoder(z, noise)


def make_quantizer(cfg: WaveVAEConfig):
  """The codec's quantizer, or None for the Gaussian bottleneck."""
  return quantizers.make(
    cfg.bottleneck,
    dim=cfg.latent_dim,
    num_codes=cfg.num_codes,
    commitment_cost=cfg.commitment_cost,
    num_quantizers=cfg.num_quantizers,
    quantizer_dropout=cfg.quantizer_dropout,
    lookup_dim=cfg.lookup_dim,
    fsq_levels=tuple(cfg.fsq_levels),
  )


class WaveVAE(nn.Module):
  """params {'generator': {'encoder', 'decoder'}, 'discriminator'} (module doc)."""

  cfg: WaveVAEConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.generator = Autoencoder(self.cfg)
    self.discriminator = vocoder_lib.Discriminators(self.cfg)

  @property
  def encoder(self):
    return self.generator.encoder

  @property
  def decoder(self):
    return self.generator.decoder

  def _bands(self, y):
    """Sub-bands [B, T, bands] of waveforms, zero-padded to a multiple of `hop` samples."""
    extra = (-y.shape[-1]) % self.cfg.hop
    y = jnp.pad(y, ((0, 0), (0, extra))) if extra else y
    return jnp.swapaxes(self.cfg.pqmf.analysis(y), 1, 2)

  @property
  def quantizer(self):
    return self.generator.quantizer

  def encode(self, y):
    """Waveforms [B, samples] (padded to a multiple of `hop`) -> (mu, logvar) [B, frames,
    latent] (a codec: (the encoder's vectors, None))."""
    return self.encoder(self._bands(y))[0]

  def stream_encode(self, y, cache):
    """One chunk of waveforms [B, n * hop] -> ((mu, logvar) [B, n, latent] (a codec: (the
    encoder's vectors, None)), new cache); `cache` from `init_encode_cache` for the first
    chunk (causal models only). The PQMF analysis runs causally, so the stream encodes the
    input delayed by `cfg.latency` samples: its frames are `encode` of the waveform with
    `latency` zeros in front (the first frames of that)."""
    if not self.cfg.causal:
      raise ValueError("stream_encode needs a causal model (model.causal=True)")
    if y.shape[-1] % self.cfg.hop:
      raise ValueError(
        f"stream_encode: {y.shape[-1]} samples is not whole frames of {self.cfg.hop}"
      )
    sub, tail = causal_analysis(self.cfg.pqmf, y, cache["pqmf"])
    out, convs = self.encoder(jnp.swapaxes(sub, 1, 2), cache["convs"])
    return out, {"convs": convs, "pqmf": tail}

  def encode_codes(self, y, n_quantizers=None):
    """A codec's codes of waveforms: [B, frames] (rvq: [B, frames, levels]; levels past
    `n_quantizers` are -1)."""
    return self.codes(self.encode(y)[0], n_quantizers)

  def codes(self, z, n_quantizers=None):
    """A codec's codes of the encoder's vectors [B, frames, latent_dim] (`encode_codes`)."""
    kwargs = {"n_quantizers": n_quantizers} if self.cfg.bottleneck == "rvq" else {}
    return self.quantizer(z, train=False, **kwargs)["codes"]

  def lookup(self, codes):
    """A codec's codes -> the vectors the decoder reads [B, frames, latent_dim]."""
    return self.quantizer.lookup(codes)

  def bottleneck(self, y, key, train: bool):
    """(z the decoder reads, {'kl' or 'vq_loss', ...}) of waveforms: a sample of the posterior
    (its mean when not training) or the quantized vectors."""
    mu, logvar = self.encode(y)
    if self.quantizer is None:
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape) if train else mu
      return z, {"mu": mu, "logvar": logvar, "z": z}
    out = self.quantizer(mu, train=train)
    keep = ("vq_loss", "perplexity", "code_counts", "levels_used")
    return out["quantized"].astype(jnp.float32), {k: out[k] for k in keep if k in out}

  def decode(self, z, noise_key=None):
    """Latents [B, frames, latent] -> waveforms [B, frames * hop]."""
    sub, _ = self.decoder(z, self._noise(z, 0, noise_key))
    return self._synthesis(sub)

  def _noise(self, z, start, key):
    key = jax.random.PRNGKey(0) if key is None else key
    length = z.shape[1] * math.prod(self.cfg.ratios)
    noise = position_noise(key, start, length, self.cfg.bands)
    return jnp.broadcast_to(noise, (z.shape[0], *noise.shape))

  def _synthesis(self, sub):
    """Sub-bands [B, T, bands] -> samples, aligned with the input (the PQMF centred)."""
    return self.cfg.pqmf.synthesis(jnp.swapaxes(sub, 1, 2))

  def __call__(self, batch, train: bool = False):
    """Validation (and init): the waveform decoded from the posterior mean (or the codes),
    with the bottleneck's terms ('mu'/'logvar', or 'vq_loss', 'perplexity', ...)."""
    y = batch["x"][:, 0, :].astype(jnp.float32)
    key = self.make_rng("sample") if train else jax.random.PRNGKey(0)
    z, terms = self.bottleneck(y, key, train)
    noise_key = self.make_rng("sample") if train else None
    if self.is_initializing():  # every parameter, of both sides, in one init
      self.generator(self._bands(y), z, self._noise(z, 0, noise_key))
      self.discriminator(y)
    wave = self._synthesis(self.decoder(z, self._noise(z, 0, noise_key))[0])
    return {"wave": wave[:, : y.shape[-1]], "z": z, **terms}

  def autoencode(self, y, key):
    """(waveform out, the bottleneck's terms) of waveforms [B, samples] in training: z sampled
    (or quantized, levels dropped) with `key`."""
    k_z, k_noise = jax.random.split(key)
    z, terms = self.bottleneck(y, k_z, train=True)
    wave = self._synthesis(self.decoder(z, self._noise(z, 0, k_noise))[0])
    return wave[:, : y.shape[-1]], terms

  def decode_wave(self, z, noise_key=None):
    wave = self._synthesis(self.decoder(z, self._noise(z, 0, noise_key))[0])
    return wave

  def stream_decode(self, z, cache, noise_key=None):
    """One chunk of latent frames [B, n, latent] -> (n * hop samples [B, n * hop], new cache);
    `cache` from `init_cache` for the first chunk (causal models only). The stream lags
    `decode_wave` by `cfg.latency` samples: its sample t is the offline one t - latency."""
    if not self.cfg.causal:
      raise ValueError("stream_decode needs a causal model (model.causal=True)")
    sub, convs = self.decoder(z, self._noise(z, cache["position"], noise_key), cache["convs"])
    wave, tail = causal_synthesis(self.cfg.pqmf, jnp.swapaxes(sub, 1, 2), cache["pqmf"])
    steps = z.shape[1] * math.prod(self.cfg.ratios)
    return wave, {"convs": convs, "pqmf": tail, "position": cache["position"] + steps}

  def discriminate(self, y):
    return self.discriminator(y)


def causal_synthesis(bank: pqmf_lib.PQMF, sub, tail=None):
  """PQMF synthesis [B, bands, frames] -> [B, frames * bands] applied causally (each output
  sample from the upsampled sub-band samples up to it), with `tail`, the last taps - 1
  upsampled samples of the stream so far (zeros at its start); returns (samples, new tail)."""
  _, g = pqmf_lib.filters(bank.bands, bank.overlap, bank.attenuation_db)
  b, m, frames = sub.shape
  up = jnp.zeros((b, m, frames * m), jnp.float32).at[:, :, ::m].set(sub.astype(jnp.float32))
  span = bank.taps - 1
  past = jnp.zeros((b, m, span), jnp.float32) if tail is None else tail
  full = jnp.concatenate([past, up], axis=-1)
  kernel = jnp.asarray(g[None, :, ::-1].copy())
  out = jax.lax.conv_general_dilated(
    full, kernel, (1,), "VALID", dimension_numbers=("NCH", "OIH", "NCH")
  )
  return m * out[:, 0, :], full[:, :, full.shape[-1] - span :]


def causal_analysis(bank: pqmf_lib.PQMF, y, tail=None):
  """PQMF analysis [B, samples] (a multiple of bands) -> [B, bands, samples / bands] applied
  causally: sub-band frame j from the samples up to j x bands, with `tail`, the last taps - 1
  samples of the stream so far (zeros at its start). Equal to `bank.analysis` of the input
  delayed by (taps - 1) / 2 samples; returns (sub-bands, new tail)."""
  h, _ = pqmf_lib.filters(bank.bands, bank.overlap, bank.attenuation_db)
  y = jnp.asarray(y, jnp.float32)
  span = bank.taps - 1
  past = jnp.zeros((y.shape[0], span), jnp.float32) if tail is None else tail
  full = jnp.concatenate([past, y], axis=-1)
  kernel = jnp.asarray(h[:, None, ::-1].copy())
  sub = jax.lax.conv_general_dilated(
    full[:, None, :], kernel, (bank.bands,), "VALID", dimension_numbers=("NCH", "OIH", "NCH")
  )
  return sub, full[:, full.shape[-1] - span :]


def init_encode_cache(model: WaveVAE, variables, batch: int):
  """The zero state of an encoding stream: every causal convolution's cache of the encoder
  (shapes by tracing one frame) and the PQMF analysis's tail of samples."""
  cfg = model.cfg
  bands = jnp.zeros((batch, math.prod(cfg.ratios), cfg.bands), jnp.float32)
  encode = lambda m, bands: m.generator.encoder(bands)[1]
  shapes = jax.eval_shape(lambda v: model.apply(v, bands, method=encode), variables)
  convs = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return {"convs": convs, "pqmf": jnp.zeros((batch, cfg.pqmf.taps - 1), jnp.float32)}


def init_cache(model: WaveVAE, variables, batch: int):
  """The zero state of a stream: every causal convolution's cache (shapes by tracing one
  frame through the decoder), the PQMF's tail and the sub-band sample position."""
  cfg = model.cfg
  z = jnp.zeros((batch, 1, cfg.latent_dim), jnp.float32)
  noise = jnp.zeros((batch, math.prod(cfg.ratios), cfg.bands), jnp.float32)
  decode = lambda m, z, noise: m.generator.decoder(z, noise)[1]
  shapes = jax.eval_shape(lambda v: model.apply(v, z, noise, method=decode), variables)
  convs = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  tail = jnp.zeros((batch, cfg.bands, cfg.pqmf.taps - 1), jnp.float32)
  return {"convs": convs, "pqmf": tail, "position": jnp.int32(0)}


def num_parameters(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
