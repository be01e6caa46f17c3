"""A neural vocoder: log-mel features in, waveform out (Vocos-style), with the discriminators
that train it adversarially (HiFi-GAN's multi-period, a multi-resolution STFT one).

Generator (`VocosGenerator`): a 1-D convolution embeds each mel frame, ConvNeXt blocks
(depthwise convolution, LayerNorm, a pointwise MLP, a learned layer scale, a residual) keep the
frame rate, and a linear head predicts per frame the log-magnitude and the phase of an STFT
whose hop is the mel's; `audio.features.istft` turns that into samples. All the work is at the
frame rate (one frame per hop samples), not at the sample rate: that is what makes it fast.

Discriminators (`MultiPeriodDiscriminator`, `MultiResolutionDiscriminator`): each returns a
list of `{'logits': [B, ...], 'features': [...]}`, one per period or STFT size
(`jaxvae.losses.adversarial`'s format).

`Vocoder` holds both as `params['generator']` and `params['discriminator']` (two optimizers,
`jaxvae.variants.vocoder`); `__call__` computes the mel of a waveform batch exactly as the
feature store does (`data.featurize.mel_db`) and vocodes it, so training and inference see the
same features.

Parameter shapes use flax.linen's defaults; every layer runs in float32 unless `dtype` says
otherwise (the STFTs of the head and the losses always run in float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.audio import features
from jaxvae.data import featurize

# What a mel input is divided by before the first convolution (dB features span about
# -100..+20; a LayerNorm follows, so this only keeps the first layer's inputs near unit scale).
INPUT_SCALE = 20.0
MAX_LOG_MAGNITUDE = 4.6  # exp(4.6) ~ 100, Vocos's magnitude clip: no overflow early on


@dataclasses.dataclass(frozen=True)
class VocoderConfig:
  """The shapes of a vocoder (`configs/vocoder.py`'s `model` group)."""

  dim: int = 256  # channels of the ConvNeXt backbone
  intermediate: int = 768  # the blocks' MLP width
  layers: int = 8
  kernel: int = 7  # depthwise convolution width, in frames
  # Discriminators
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)
  period_channels: tuple[int, ...] = (16, 64, 128, 128)
  resolutions: tuple[int, ...] = (512, 1024, 2048)  # STFT sizes of the MRD (hop n/4)
  resolution_channels: int = 32
  head_fft: int = 2048  # the output STFT's size (a multiple of hop_length; Vocos: 4 hops)
  # The feature settings it reads (a store's `featurize.feature_params` subset)
  sr: int = 22050
  n_fft: int = 2048
  hop_length: int = 512
  n_mels: int = 128
  scale: str = "db"
  db_reference: str = "absolute"

  @property
  def mel_params(self) -> dict:
    return {
      "sr": self.sr,
      "n_fft": self.n_fft,
      "hop_length": self.hop_length,
      "n_mels": self.n_mels,
      "scale": self.scale,
      "db_reference": self.db_reference,
    }


class FrameConv(nn.Module):
  """A 'SAME' 1-D convolution over frames [B, frames, C] with flax.linen.Conv's parameters
  (`kernel` [k, C_in / groups, C_out], `bias`), computed as shifted copies: a depthwise one
  (`depthwise`) as a weighted sum of k shifts, a full one as one matmul of the k shifts side
  by side. On XLA:CPU both are several times faster than the convolution op at these sizes
  (a 192-channel depthwise kernel of 7: 0.06 ms against 0.84 ms, BUILD_NOTES.md)."""

  features: int
  kernel_size: int
  depthwise: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (k, 1 if self.depthwise else c, self.features)
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    left = (k - 1) // 2
    padded = jnp.pad(x, ((0, 0), (left, k - 1 - left), (0, 0)))
    shifts = [padded[:, i : i + x.shape[1], :] for i in range(k)]
    if self.depthwise:
      out = sum(shift * kernel[i, 0].astype(self.dtype) for i, shift in enumerate(shifts))
    else:
      stacked = jnp.concatenate(shifts, axis=-1)  # [B, frames, k * C]
      out = stacked @ kernel.reshape(k * c, self.features).astype(self.dtype)
    return out + bias.astype(self.dtype)


class ConvNeXtBlock(nn.Module):
  """Depthwise conv -> LayerNorm -> Dense(intermediate) -> GELU -> Dense(dim), scaled by a
  learned per-channel gain (initially 1 / layers) and added to the input. [B, frames, dim]."""

  dim: int
  intermediate: int
  kernel: int
  layer_scale: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # Named as the flax.linen.Conv it computes (checkpoints of either load).
    h = FrameConv(self.dim, self.kernel, depthwise=True, dtype=self.dtype, name="Conv_0")(x)
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(h)
    h = nn.Dense(self.intermediate, dtype=self.dtype)(h)
    h = nn.gelu(h)
    h = nn.Dense(self.dim, dtype=self.dtype)(h)
    gamma = self.param("gamma", nn.initializers.constant(self.layer_scale), (self.dim,))
    return x + gamma * h


class VocosGenerator(nn.Module):
  """Mel features [B, n_mels, frames] -> waveform [B, hop * (frames - 1)]."""

  cfg: VocoderConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, mel):
    cfg = self.cfg
    x = jnp.swapaxes(mel.astype(jnp.float32) / INPUT_SCALE, 1, 2)  # [B, frames, n_mels]
    x = FrameConv(cfg.dim, cfg.kernel, dtype=self.dtype, name="Conv_0")(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    for _ in range(cfg.layers):
      x = ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel, 1.0 / cfg.layers, self.dtype)(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    bins = cfg.head_fft // 2 + 1
    head = nn.Dense(2 * bins, dtype=jnp.float32)(x.astype(jnp.float32))  # [B, frames, 2 bins]
    log_mag, phase = head[..., :bins], head[..., bins:]
    magnitude = jnp.exp(jnp.minimum(log_mag, MAX_LOG_MAGNITUDE))
    spec = magnitude * (jnp.cos(phase) + 1j * jnp.sin(phase))  # [B, frames, bins]
    return features.istft(jnp.swapaxes(spec, 1, 2), cfg.hop_length, cfg.head_fft)


class PeriodDiscriminator(nn.Module):
  """HiFi-GAN's: the waveform folded into [samples / period, period] columns, 2-D
  convolutions along time only (kernel (5, 1), stride (3, 1))."""

  period: int
  channels: tuple[int, ...]

  @nn.compact
  def __call__(self, y):
    b, t = y.shape
    pad = (-t) % self.period
    x = jnp.pad(y, ((0, 0), (0, pad)), mode="reflect" if pad < t else "constant")
    x = x.reshape(b, (t + pad) // self.period, self.period, 1)
    feats = []
    for c in self.channels:
      x = nn.leaky_relu(nn.Conv(c, (5, 1), strides=(3, 1), padding=((2, 2), (0, 0)))(x), 0.1)
      feats.append(x)
    x = nn.leaky_relu(nn.Conv(self.channels[-1], (5, 1), padding=((2, 2), (0, 0)))(x), 0.1)
    feats.append(x)
    logits = nn.Conv(1, (3, 1), padding=((1, 1), (0, 0)))(x)[..., 0]
    return {"logits": logits, "features": feats}


class ResolutionDiscriminator(nn.Module):
  """A 2-D convolutional discriminator on one STFT's log-magnitude (n_fft, hop n_fft / 4)."""

  n_fft: int
  channels: int

  @nn.compact
  def __call__(self, y):
    spec = features.stft(y, n_fft=self.n_fft, hop_length=self.n_fft // 4, fft_dtype="float32")
    x = jnp.log1p(jnp.abs(spec))  # [B, bins, frames]
    x = jnp.swapaxes(x, 1, 2)[..., None]  # [B, frames, bins, 1]
    feats = []
    for kernel, stride in (((3, 9), (1, 1)), ((3, 9), (1, 2)), ((3, 9), (1, 2)), ((3, 3), (1, 1))):
      x = nn.leaky_relu(nn.Conv(self.channels, kernel, strides=stride, padding="SAME")(x), 0.1)
      feats.append(x)
    logits = nn.Conv(1, (3, 3), padding="SAME")(x)[..., 0]
    return {"logits": logits, "features": feats}


class Discriminators(nn.Module):
  """The multi-period and the multi-resolution discriminators: one output per period and
  per STFT size."""

  cfg: VocoderConfig

  @nn.compact
  def __call__(self, y):
    y = y.astype(jnp.float32)
    outs = [PeriodDiscriminator(p, self.cfg.period_channels)(y) for p in self.cfg.periods]
    outs += [
      ResolutionDiscriminator(n, self.cfg.resolution_channels)(y) for n in self.cfg.resolutions
    ]
    return outs


class Vocoder(nn.Module):
  """params['generator'] (`VocosGenerator`) and params['discriminator'] (`Discriminators`).

  `__call__(batch)`: `batch['x']` [B, 1, samples] waveforms (a waveform store's examples) ->
  {'mel': their features, 'wave': the vocoded waveform, as long as the input}.
  `vocode(mel)`: features -> waveform (what inference runs). `discriminate(y)`: the
  discriminator outputs of waveforms [B, samples]. `reads`: a frozen function the clips'
  features go through before they are vocoded in training and validation (a VAE's
  reconstruction, `jaxvae.training.frozen.FrozenFunction`: `apply(variables, mel)` and the
  variables' `shapes`), or None; its variables are the collection 'frozen' ('run'), zeros at
  init until the builder puts the trained weights there.
  """

  cfg: VocoderConfig
  dtype: jnp.dtype = jnp.float32
  reads: Any = None

  def setup(self):
    self.generator = VocosGenerator(self.cfg, self.dtype)
    self.discriminator = Discriminators(self.cfg)
    # Declared where given (or made at init): the generator's and discriminator's own
    # applications pass parameters alone.
    if self.reads is not None and (self.is_initializing() or self.has_variable("frozen", "run")):
      zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.reads.shapes)
      self.frozen = self.variable("frozen", "run", zeros)

  def __call__(self, batch, train: bool = False):
    del train
    y = batch["x"][:, 0, :].astype(jnp.float32)
    mel = self.features(y)
    wave = fit_length(self.generator(mel), y.shape[-1])
    if self.is_initializing():  # create the discriminator's parameters with the rest
      self.discriminator(y)
    return {"mel": mel, "wave": wave}

  def features(self, y):
    """What the generator is given for waveforms y [B, samples]: their mel as the store
    computes it, through `reads` when set."""
    mel = mel_of(y, self.cfg)
    return mel if self.reads is None else self.reads.apply(self.frozen.value, mel)

  def vocode(self, mel):
    return self.generator(mel)

  def discriminate(self, y):
    return self.discriminator(y)


def mel_of(y, cfg: VocoderConfig):
  """The features a vocoder reads, of waveforms [B, samples] (the feature store's function)."""
  return featurize.mel_db(y, cfg.mel_params, fft_dtype="float32")


def fit_length(y, length: int):
  """Cuts or zero-pads waveforms [..., samples] to `length` samples."""
  if y.shape[-1] >= length:
    return y[..., :length]
  return jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])


def num_parameters(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
