"""Quantizers beyond one codebook: the bottlenecks of neural codecs (DAC, EnCodec, SoundStream)
and of recent tokenizers (FSQ, LFQ), on the same interface as `vq.VectorQuantizer`.

Every quantizer here is a flax module called as `q(z, train=..., mask=...)` on encoder outputs
`z [..., dim]` and returns a dict with at least:

- `quantized` (z.shape, the straight-through or rotated value the decoder reads),
- `codes` (int32: z.shape[:-1] for one level, z.shape[:-1] + (levels,) for a residual stack),
- `vq_loss` (the float32 scalar the objective adds), `perplexity` (of the first level's codes),
- `code_counts` float32 [num_codes] (the first level's, as the one-codebook quantizer gives),
- `level_counts` [levels, num_codes] and `level_perplexity` [levels] for residual stacks.

The quantizers:

- `ResidualVQ`: `num_quantizers` codebooks, each quantizing what the ones before left
  (SoundStream, EnCodec, DAC), with *quantizer dropout*: while training, each example keeps a
  random number of levels with probability `dropout`, so one model decodes at every bitrate;
  `n_quantizers=k` at inference uses the first k. Each level is a `vq.VectorQuantizer` (EMA,
  dead-code restarts and the rotation trick as there) or, with `lookup_dim` > 0, a
  `FactorizedVQ` (DAC's factorized codes: a projection to `lookup_dim` dimensions, a
  cosine-similarity codebook there, and a projection back).
- `FSQ`: finite scalar quantization (Mentzer et al. 2023): each dimension bounded and rounded
  to `levels[i]` values; no codebook, no auxiliary loss, every code usable.
- `LFQ`: lookup-free quantization (MAGVIT-v2, Yu et al. 2023): each dimension's sign, codes
  are the bit patterns; an entropy term (per-example entropy low, codebook entropy high)
  keeps the codes in use.

Reductions run over all leading axes at once: under `jax.jit` with the batch sharded over
devices the counts, losses and EMA statistics are global, the same on every device.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.models.vq import VectorQuantizer
from jaxvae.models.vq import _position_weights
from jaxvae.models.vq import perplexity_from_counts

QUANTIZERS = ("vq", "rvq", "fsq", "lfq")


class FactorizedVQ(nn.Module):
  """DAC's factorized code lookup: `z [..., dim]` projected to `lookup_dim`, quantized by a
  cosine-similarity codebook there (`VectorQuantizer(cosine=True)`), projected back. The
  codebook is small and well used; the projections carry the scale."""

  num_codes: int
  dim: int
  lookup_dim: int = 8
  commitment_cost: float = 0.25
  rotation_trick: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.in_proj = nn.Dense(self.lookup_dim)
    self.vq = VectorQuantizer(
      num_codes=self.num_codes,
      code_dim=self.lookup_dim,
      commitment_cost=self.commitment_cost,
      cosine=True,
      rotation_trick=self.rotation_trick,
    )
    self.out_proj = nn.Dense(self.dim)

  def __call__(self, z, *, train: bool, mask=None) -> dict:
    out = self.vq(self.in_proj(z.astype(jnp.float32)), train=train, mask=mask)
    quantized = self.out_proj(out["quantized"])
    return dict(out, quantized=quantized.astype(self.dtype))

  def lookup(self, codes):
    """The output vectors [..., dim] of int codes."""
    return self.out_proj(self.vq.lookup(codes)).astype(self.dtype)


class ResidualVQ(nn.Module):
  """`num_quantizers` levels, each quantizing the residual the ones before left (see the module
  doc). Codes [..., num_quantizers]; a level an example does not use holds code -1."""

  num_quantizers: int = 8
  num_codes: int = 1024
  dim: int = 64
  dropout: float = 0.0  # share of training examples that keep a random number of levels
  lookup_dim: int = 0  # > 0: DAC's factorized cosine codes (`FactorizedVQ`) per level
  commitment_cost: float = 0.25
  use_ema: bool = False
  ema_decay: float = 0.99
  dead_code_threshold: float = 0.0
  rotation_trick: bool = False
  init_scale: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    if self.lookup_dim:
      make = lambda: FactorizedVQ(
        self.num_codes, self.dim, self.lookup_dim, self.commitment_cost, self.rotation_trick
      )
    else:
      make = lambda: VectorQuantizer(
        num_codes=self.num_codes,
        code_dim=self.dim,
        commitment_cost=self.commitment_cost,
        use_ema=self.use_ema,
        ema_decay=self.ema_decay,
        init_scale=self.init_scale,
        dead_code_threshold=self.dead_code_threshold,
        rotation_trick=self.rotation_trick,
      )
    self.level = [make() for _ in range(self.num_quantizers)]  # named level_0, level_1, ...

  def lookup(self, codes):
    """The summed output vectors [..., dim] of codes [..., num_quantizers] (-1: unused)."""
    codes = jnp.asarray(codes, jnp.int32)
    total = 0.0
    for i, level in enumerate(self.level):
      c = codes[..., i]
      vectors = level.lookup(jnp.maximum(c, 0)).astype(jnp.float32)
      total = total + jnp.where((c >= 0)[..., None], vectors, 0.0)
    return jnp.asarray(total, self.dtype)

  def levels_used(self, batch: int, train: bool, n_quantizers: int | None) -> jax.Array:
    """int32 [batch]: how many levels each example uses. Training with `dropout` > 0: with
    that probability a number drawn uniformly from 1..num_quantizers (DAC's quantizer
    dropout, from the 'vq' rng), else all; inference: `n_quantizers` (default all)."""
    n = self.num_quantizers
    if n_quantizers is not None:
      if not 1 <= int(n_quantizers) <= n:
        raise ValueError(f"ResidualVQ: n_quantizers must be in 1..{n}, got {n_quantizers}")
      return jnp.full((batch,), int(n_quantizers), jnp.int32)
    if not train or self.dropout <= 0 or self.is_initializing():
      return jnp.full((batch,), n, jnp.int32)
    key_drop, key_n = jax.random.split(self.make_rng("vq"))
    drawn = jax.random.randint(key_n, (batch,), 1, n + 1)
    return jnp.where(jax.random.uniform(key_drop, (batch,)) < self.dropout, drawn, n)

  def __call__(self, z, *, train: bool, mask=None, n_quantizers: int | None = None) -> dict:
    lead = z.shape[:-1]
    used = self.levels_used(lead[0], train, n_quantizers)
    example_mask = jnp.ones((lead[0],), jnp.float32) if mask is None else jnp.asarray(mask)
    residual = z.astype(jnp.float32)
    total = jnp.zeros_like(residual)
    codes, losses, counts = [], [], []
    for i, level in enumerate(self.level):
      active = (used > i).astype(jnp.float32)  # [B]
      out = level(residual, train=train, mask=example_mask * active)
      keep = active.reshape(active.shape + (1,) * (z.ndim - 1))
      total = total + keep * out["quantized"].astype(jnp.float32)
      residual = residual - keep * jax.lax.stop_gradient(out["quantized"].astype(jnp.float32))
      level_codes = jnp.where(keep[..., 0] > 0, out["codes"], -1)
      codes.append(level_codes)
      losses.append(out["vq_loss"])
      counts.append(out["code_counts"])
    level_counts = jnp.stack(counts)
    return {
      "quantized": total.astype(self.dtype),
      "codes": jnp.stack(codes, axis=-1),
      "vq_loss": sum(losses),
      "perplexity": perplexity_from_counts(level_counts[0]),
      "code_counts": level_counts[0],
      "level_counts": level_counts,
      "level_perplexity": jax.vmap(perplexity_from_counts)(level_counts),
      "levels_used": jnp.mean(used.astype(jnp.float32)),
    }


def _fsq_basis(levels) -> np.ndarray:
  return np.cumprod((1,) + tuple(levels[:-1])).astype(np.int64)


class FSQ(nn.Module):
  """Finite scalar quantization of `z [..., len(levels)]`: dimension i is bounded to
  `levels[i]` values by a shifted tanh and rounded (gradients straight through), scaled to
  [-1, 1]; a code is the mixed-radix number of the rounded values (`num_codes` = the product
  of the levels, e.g. (8, 5, 5, 5): 1,000). `vq_loss` is 0: nothing to learn or restart."""

  levels: tuple[int, ...] = (8, 5, 5, 5)
  dtype: Any = jnp.float32

  @property
  def num_codes(self) -> int:
    return int(np.prod(self.levels))

  def bound(self, z):
    """Each dimension squeezed into (-(L-1)/2, (L-1)/2), shifted for even L so rounding
    gives exactly L values."""
    levels = jnp.asarray(self.levels, jnp.float32)
    half = (levels - 1.0) * (1.0 + 1e-3) / 2.0
    offset = jnp.where(jnp.asarray(self.levels) % 2 == 0, 0.5, 0.0)
    shift = jnp.arctanh(offset / half)
    return jnp.tanh(z + shift) * half - offset

  def __call__(self, z, *, train: bool = False, mask=None) -> dict:
    del train
    if z.shape[-1] != len(self.levels):
      raise ValueError(f"FSQ: expected input [..., {len(self.levels)}], got shape {z.shape}")
    bounded = self.bound(z.astype(jnp.float32))
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    width = jnp.asarray([lv // 2 for lv in self.levels], jnp.float32)
    quantized = rounded / width  # in [-1, 1]
    codes = self.codes_of(quantized)
    weights = _position_weights(mask, z.shape[:-1])
    counts = jax.ops.segment_sum(weights, codes.reshape(-1), num_segments=self.num_codes)
    return {
      "quantized": quantized.astype(self.dtype),
      "codes": codes,
      "vq_loss": jnp.float32(0.0),
      "perplexity": perplexity_from_counts(counts),
      "code_counts": counts,
    }

  def codes_of(self, quantized):
    """int32 codes of quantized values [..., len(levels)] (as `__call__` returns them)."""
    width = jnp.asarray([lv // 2 for lv in self.levels], jnp.float32)
    digits = jnp.round(quantized * width + width).astype(jnp.int32)
    return jnp.sum(digits * jnp.asarray(_fsq_basis(self.levels), jnp.int32), axis=-1)

  def lookup(self, codes):
    return self.values_of(codes).astype(self.dtype)

  def values_of(self, codes):
    """The quantized values [..., len(levels)] of int codes (the decoder's input for codes)."""
    codes = jnp.asarray(codes, jnp.int32)[..., None]
    levels = jnp.asarray(self.levels, jnp.int32)
    digits = (codes // jnp.asarray(_fsq_basis(self.levels), jnp.int32)) % levels
    width = jnp.asarray([lv // 2 for lv in self.levels], jnp.float32)
    return (digits.astype(jnp.float32) - width) / width


class LFQ(nn.Module):
  """Lookup-free quantization of `z [..., dim]`: each dimension's sign (+1 / -1, gradients
  straight through); code = the bits as a number (`num_codes` = 2^dim). `vq_loss` =
  `commitment_cost` x ||z - q||^2 + `entropy_weight` x (mean per-example entropy -
  `diversity` x the codebook's entropy), with both entropies of the soft assignment
  softmax(-||z - c||^2 / `temperature`) over the 2^dim codes. That softmax factorizes over
  dimensions, so each entropy is computed per bit and summed: exact for the per-example
  term, an upper bound of the codebook term (MAGVIT-v2's factorized variant)."""

  dim: int = 10
  commitment_cost: float = 0.25
  entropy_weight: float = 0.1
  diversity: float = 1.0
  temperature: float = 1.0
  dtype: Any = jnp.float32

  @property
  def num_codes(self) -> int:
    return 2**self.dim

  def __call__(self, z, *, train: bool = False, mask=None) -> dict:
    del train
    if z.shape[-1] != self.dim:
      raise ValueError(f"LFQ: expected input [..., {self.dim}], got shape {z.shape}")
    z = z.astype(jnp.float32)
    q = jnp.where(z > 0, 1.0, -1.0)
    quantized = z + jax.lax.stop_gradient(q - z)
    codes = self.codes_of(q)
    weights = _position_weights(mask, z.shape[:-1])
    flat = z.reshape(-1, self.dim)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    # p(bit = 1) under the softmax over the two values +1 / -1 of each dimension.
    p1 = jax.nn.sigmoid(4.0 * flat / self.temperature)
    bit_entropy = lambda p: -(p * jnp.log(p + 1e-9) + (1 - p) * jnp.log(1 - p + 1e-9))
    per_example = jnp.sum(weights * jnp.sum(bit_entropy(p1), -1)) / total
    mean_p = jnp.sum(weights[:, None] * p1, 0) / total
    codebook = jnp.sum(bit_entropy(mean_p))
    commit = jnp.sum(weights * jnp.mean(jnp.square(flat - q.reshape(flat.shape)), -1)) / total
    loss = self.commitment_cost * commit + self.entropy_weight * (
      per_example - self.diversity * codebook
    )
    counts = None
    if self.dim <= 16:  # usage counts over 2^dim codes: at most 65,536
      counts = jax.ops.segment_sum(weights, codes.reshape(-1), num_segments=self.num_codes)
    return {
      "quantized": quantized.astype(self.dtype),
      "codes": codes,
      "vq_loss": loss,
      "perplexity": perplexity_from_counts(counts) if counts is not None else jnp.exp(codebook),
      "code_counts": counts if counts is not None else jnp.zeros((1,), jnp.float32),
      "entropy_per_example": per_example,
      "entropy_codebook": codebook,
    }

  def codes_of(self, q):
    bits = (q > 0).astype(jnp.int32)
    return jnp.sum(bits * (2 ** jnp.arange(self.dim, dtype=jnp.int32)), axis=-1)

  def lookup(self, codes):
    return self.values_of(codes).astype(self.dtype)

  def values_of(self, codes):
    codes = jnp.asarray(codes, jnp.int32)[..., None]
    bits = (codes >> jnp.arange(self.dim, dtype=jnp.int32)) & 1
    return jnp.where(bits > 0, 1.0, -1.0)


def make(kind: str, *, dim: int, num_codes: int = 1024, **settings) -> nn.Module | None:
  """The quantizer `kind` ('vq', 'rvq', 'fsq', 'lfq'; None for 'gaussian', no quantizer) for
  vectors of `dim` dimensions. `settings` may hold any of: commitment_cost, use_ema,
  ema_decay, ema_eps, init_scale, dead_code_threshold, rotation_trick (codebooks),
  num_quantizers, quantizer_dropout, lookup_dim (rvq), fsq_levels (fsq; dim must be their
  count), lfq_entropy_weight (lfq), dtype; each quantizer takes what applies to it."""
  get = settings.get
  codebook = {
    k: settings[k]
    for k in ("commitment_cost", "use_ema", "ema_decay", "init_scale", "dead_code_threshold")
    if k in settings
  }
  codebook |= {"rotation_trick": bool(get("rotation_trick", False))}
  dtype = get("dtype", jnp.float32)
  if kind == "gaussian":
    return None
  if kind == "rvq":
    return ResidualVQ(
      num_quantizers=int(get("num_quantizers", 8)),
      num_codes=num_codes,
      dim=dim,
      dropout=float(get("quantizer_dropout", 0.0)),
      lookup_dim=int(get("lookup_dim", 0)),
      dtype=dtype,
      **codebook,
    )
  if kind == "fsq":
    return FSQ(tuple(get("fsq_levels", (8, 5, 5, 5))), dtype=dtype)
  if kind == "lfq":
    return LFQ(
      dim,
      commitment_cost=float(get("commitment_cost", 0.25)),
      entropy_weight=float(get("lfq_entropy_weight", 0.1)),
      dtype=dtype,
    )
  if kind == "vq":
    extra = {"ema_eps": settings["ema_eps"]} if "ema_eps" in settings else {}
    return VectorQuantizer(num_codes=num_codes, code_dim=dim, dtype=dtype, **codebook, **extra)
  raise ValueError(f"quantizer kind {kind!r}: expected gaussian or one of {', '.join(QUANTIZERS)}")
