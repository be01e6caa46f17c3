"""The audio puzzle VQ-VAE: a small conv VQ-VAE on [128 mel x 32 frame] spectrograms.

The latent is a 30 x 30 grid of 64-d vectors quantized to 10 codes, so every clip becomes a
30 x 30 "puzzle" of 10 piece types.

Parameter counts (BatchNorm scale + bias count as parameters, running statistics live in
`batch_stats`) match the seed's PyTorch model exactly when every conv has a bias:
  encoder  Conv4x4 1->32 (16*1*32 + 32 = 544) + BN (64)
           Conv4x4 32->64 (16*32*64 + 64 = 32,832) + BN (128)
           Conv1x1 64->64 (64*64 + 64 = 4,160)                                    = 37,728
  codebook 10 x 64                                                                =    640
  decoder  Conv1x1 64->64 (4,160) + BN (128)
           ConvT4x4 64->32 (16*64*32 + 32 = 32,800) + BN (64)
           ConvT4x4 32->16 (16*32*16 + 16 = 8,208) + BN (32)
           Conv1x1 16->1 (16 + 1 = 17)                                            = 45,409
  total                                                                           = 83,777
Padding does not change the counts; it is chosen to reproduce PyTorch's shapes and alignment:
Conv2d(k=4, s=2, padding=1) is flax padding ((1, 1), (1, 1)) (128 x 32 -> 64 x 16 -> 32 x 8),
and ConvTranspose2d(k=4, s=2, padding=1) is flax ConvTranspose with padding k - 1 - 1 = 2 on
each side and `transpose_kernel=True` (30 -> 60 -> 120), which gives the same outputs as
PyTorch for the same kernel layout. The decoder's last Conv1x1 runs before the bilinear
resize to the input's size (the seed resizes first): both are linear and the resize's
weights sum to one, so the output is the same up to float rounding, with one channel to
resize instead of 16 (on the CPU the step went from 650 to 597 ms with this and the
pointwise convolutions as dots, `layers.Conv`). With `use_ema=True` the codebook is EMA state in
`vq_stats`, not a parameter, so the parameter total is 640 lower.

`quantizer` swaps the bottleneck (`jaxvae.models.quantizers`): 'vq' (the seed's one codebook),
'rvq' (`num_quantizers` residual codebooks with quantizer dropout; codes [B, h, w, levels]),
'fsq' (levels `fsq_levels`; the encoder's output has one dimension per level) or 'lfq'
(`code_dim` bits: 2^code_dim codes). `codebook_size` is the number of codes per level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.models import layers
from jaxvae.models import quantizers

# PyTorch BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch, eps 1e-5. (PyTorch keeps
# the unbiased batch variance in its running estimate, flax the biased one: a factor n/(n-1)
# with n = B * H * W, negligible here.)
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5


def _bn_relu(x: jax.Array, train: bool, dtype: Any) -> jax.Array:
  """BatchNorm in float32 (statistics must not be computed in bf16/fp16), then ReLU."""
  x = nn.BatchNorm(
    use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, dtype=jnp.float32
  )(x)
  return nn.relu(x).astype(dtype)


def _resize(x: jax.Array, hw: Sequence[int]) -> jax.Array:
  """Bilinear resize of an NHWC map, like torch F.interpolate(mode='bilinear',
  align_corners=False): half-pixel centers and no antialiasing when shrinking."""
  shape = (x.shape[0], int(hw[0]), int(hw[1]), x.shape[-1])
  return jax.image.resize(x, shape, method="bilinear", antialias=False)


class Encoder(nn.Module):
  """[B, H, W, 1] -> [B, grid_h, grid_w, code_dim] (not yet quantized)."""

  channels: Sequence[int] = (32, 64)
  code_dim: int = 64
  grid: Sequence[int] = (30, 30)
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"  # layers.Conv impl (its input gradient, a transposed conv)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    for features in self.channels:
      x = layers.Conv(
        features, (4, 4), (2, 2), ((1, 1), (1, 1)), dtype=self.dtype, impl=self.conv_transpose
      )(x)
      x = _bn_relu(x, train, self.dtype)
    x = _resize(x, self.grid)
    return layers.Conv(self.code_dim, (1, 1), dtype=self.dtype, impl=self.conv_transpose)(x)


class Decoder(nn.Module):
  """[B, grid_h, grid_w, code_dim] -> [B, *out_hw] values in (0, 1), float32."""

  channels: Sequence[int] = (64, 32, 16)
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"  # layers.ConvTranspose impl

  @nn.compact
  def __call__(self, z: jax.Array, out_hw: tuple[int, int], *, train: bool) -> jax.Array:
    x = layers.Conv(self.channels[0], (1, 1), dtype=self.dtype, impl=self.conv_transpose)(
      z.astype(self.dtype)
    )
    x = _bn_relu(x, train, self.dtype)
    for features in self.channels[1:]:
      x = layers.ConvTranspose(
        features,
        (4, 4),
        strides=(2, 2),
        padding=((2, 2), (2, 2)),
        transpose_kernel=True,
        dtype=self.dtype,
        impl=self.conv_transpose,
      )(x)
      x = _bn_relu(x, train, self.dtype)
    x = layers.Conv(1, (1, 1), dtype=self.dtype, impl=self.conv_transpose)(x)
    x = _resize(x, out_hw)
    return nn.sigmoid(x.astype(jnp.float32))[..., 0]


class PuzzleVQVAE(nn.Module):
  """The audio puzzle VQ-VAE. Applied to a batch dict (`x` float32 [B, n_mels, frames], optional
  `mask` [B]); see the module docstring for the layers and parameter counts."""

  num_codes: int = 10
  code_dim: int = 64
  grid: Sequence[int] = (30, 30)
  enc_channels: Sequence[int] = (32, 64)
  dec_channels: Sequence[int] = (64, 32, 16)
  commitment_cost: float = 0.25
  use_ema: bool = False
  ema_decay: float = 0.99
  ema_eps: float = 1e-5
  init_scale: float = 0.1
  dead_code_threshold: float = 0.0
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"
  quantizer: str = "vq"  # 'vq', 'rvq', 'fsq' or 'lfq' (module doc)
  num_quantizers: int = 4  # rvq
  quantizer_dropout: float = 0.0  # rvq: share of training examples with fewer levels
  lookup_dim: int = 0  # rvq: > 0 for DAC's factorized cosine codes
  rotation_trick: bool = False  # vq, rvq
  fsq_levels: Sequence[int] = (8, 5, 5, 5)
  lfq_entropy_weight: float = 0.1

  @property
  def latent_dim(self) -> int:
    """The encoder's output dimension per grid cell."""
    return len(self.fsq_levels) if self.quantizer == "fsq" else self.code_dim

  @property
  def codebook_size(self) -> int:
    if self.quantizer == "fsq":
      return int(np.prod(self.fsq_levels))
    if self.quantizer == "lfq":
      return 2**self.code_dim
    return self.num_codes

  def setup(self):
    # setup (not compact) so that `encode` can reuse the encoder, e.g. to collect encoder
    # outputs for `kmeans_init`.
    self.encoder = Encoder(
      self.enc_channels, self.latent_dim, self.grid, self.dtype, self.conv_transpose
    )
    self.vq = self._quantizer()
    self.decoder = Decoder(self.dec_channels, self.dtype, self.conv_transpose)

  def _quantizer(self) -> nn.Module:
    return quantizers.make(
      self.quantizer,
      dim=self.latent_dim,
      num_codes=self.num_codes,
      commitment_cost=self.commitment_cost,
      use_ema=self.use_ema,
      ema_decay=self.ema_decay,
      ema_eps=self.ema_eps,
      init_scale=self.init_scale,
      dead_code_threshold=self.dead_code_threshold,
      rotation_trick=self.rotation_trick,
      num_quantizers=self.num_quantizers,
      quantizer_dropout=self.quantizer_dropout,
      lookup_dim=self.lookup_dim,
      fsq_levels=tuple(self.fsq_levels),
      lfq_entropy_weight=self.lfq_entropy_weight,
      dtype=self.dtype,
    )

  def decode_codes(self, codes: jax.Array, hw: Sequence[int]) -> jax.Array:
    """Code grids ([B, h, w], rvq: [B, h, w, levels]) -> the decoder's output [B, *hw, 1]."""
    return self.decoder(self.vq.lookup(codes).astype(self.dtype), hw, train=False)

  def encode(self, batch: dict, *, train: bool = False) -> jax.Array:
    """Continuous encoder outputs float32 [B, grid_h, grid_w, code_dim]."""
    return self.encoder(_to_nhwc(batch["x"]), train=train).astype(jnp.float32)

  def __call__(self, batch: dict, *, train: bool) -> dict:
    x = _to_nhwc(batch["x"])
    z = self.encoder(x, train=train)
    vq = self.vq(z, train=train, mask=batch.get("mask"))
    recon = self.decoder(vq["quantized"], x.shape[1:3], train=train)
    zero = jnp.float32(0.0)  # fsq, lfq and rvq report their loss as one term
    out = {"recon": recon, "codebook_loss": zero, "commitment_loss": zero}
    keep = ("codes", "vq_loss", "codebook_loss", "commitment_loss", "perplexity", "code_counts")
    out.update({k: vq[k] for k in keep + ("levels_used",) if k in vq})
    if "level_counts" in vq:  # rvq: each level's usage (validation: codes used, perplexity)
      out |= {f"level{i}_code_counts": c for i, c in enumerate(vq["level_counts"])}
    return out


def _to_nhwc(x: jax.Array) -> jax.Array:
  if x.ndim != 3:
    raise ValueError(f"PuzzleVQVAE: expected batch['x'] [B, n_mels, frames], got {x.shape}")
  return x[..., None]


def build_puzzle_vqvae(model_config, spec, dtype: str | None = None) -> PuzzleVQVAE:
  """Builds the model from `config.model` (missing keys take the seed's values) and a DataSpec.

  The output size follows the input at call time; `spec.input_shape` is checked here so a
  too-small input fails at build time with a clear message.
  """
  shape = tuple(spec.input_shape)
  if len(shape) != 2 or min(shape) < 4:
    raise ValueError(
      f"puzzle_vqvae: needs input_shape (n_mels, frames), each >= 4 for the two "
      f"stride-2 convs; got {shape}"
    )
  get = model_config.get
  return PuzzleVQVAE(
    num_codes=int(get("num_codes", 10)),
    code_dim=int(get("code_dim", 64)),
    grid=tuple(int(v) for v in get("grid", (30, 30))),
    enc_channels=tuple(int(v) for v in get("enc_channels", (32, 64))),
    dec_channels=tuple(int(v) for v in get("dec_channels", (64, 32, 16))),
    commitment_cost=float(get("commitment_cost", 0.25)),
    use_ema=bool(get("use_ema", False)),
    ema_decay=float(get("ema_decay", 0.99)),
    ema_eps=float(get("ema_eps", 1e-5)),
    init_scale=float(get("init_scale", 0.1)),
    dead_code_threshold=float(get("dead_code_threshold", 0.0)),
    dtype=layers.compute_dtype(dtype or get("dtype", "float32")),
    conv_transpose=get("conv_transpose", "auto"),
    quantizer=str(get("quantizer", "vq")),
    num_quantizers=int(get("num_quantizers", 4)),
    quantizer_dropout=float(get("quantizer_dropout", 0.0)),
    lookup_dim=int(get("lookup_dim", 0)),
    rotation_trick=bool(get("rotation_trick", False)),
    fsq_levels=tuple(int(v) for v in get("fsq_levels", (8, 5, 5, 5))),
    lfq_entropy_weight=float(get("lfq_entropy_weight", 0.1)),
  )
