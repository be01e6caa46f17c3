"""Vector quantization: the codebook layer, k-means initialization from data, codebook surgery.

`VectorQuantizer` maps each vector of its input (last axis) to the nearest of `num_codes`
codebook entries and passes gradients straight through to the encoder. The codebook is learned
either by gradient (codebook loss, the default, as in the original puzzle VQ-VAE) or by exponential
moving averages of the assigned vectors (`use_ema=True`, the codebook then lives in the `vq_stats`
collection and is not a parameter). With EMA, codes whose usage falls below `dead_code_threshold`
are restarted from random encoder outputs of the current batch.

Every reduction runs over all leading axes at once, so under `jax.jit` with the batch sharded
across devices the counts, losses and EMA statistics are global without explicit collectives.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VQ_STATS = "vq_stats"


def _uniform_init(scale: float):
  """Uniform in [-scale, scale) (flax's `uniform` is one-sided)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def squared_distances(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """[N, D] x [K, D] -> [N, K] squared Euclidean distances, in float32.

  The expanded form ||x||^2 - 2 x.e + ||e||^2 needs one matmul instead of an [N, K, D]
  difference tensor; HIGHEST precision keeps accelerators from rounding the matmul to
  bf16/tf32, which would flip near-tie assignments.
  """
  x = x.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  cross = jnp.dot(x, codebook.T, precision=jax.lax.Precision.HIGHEST)
  return (
    jnp.sum(x * x, axis=-1, keepdims=True)
    - 2.0 * cross
    + jnp.sum(codebook * codebook, axis=-1)[None, :]
  )


def nearest_codes(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codebook row for each row of `x`, int32 [N]."""
  return jnp.argmin(squared_distances(x, codebook), axis=-1).astype(jnp.int32)


def perplexity_from_counts(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the usage distribution: 1 for one code, K for uniform use of K codes."""
  total = jnp.sum(counts)
  probs = counts / jnp.where(total > 0, total, 1.0)
  return jnp.exp(jnp.sum(jax.scipy.special.entr(probs)))


def _position_weights(mask: jax.Array | None, lead_shape: tuple[int, ...]) -> jax.Array:
  """Per-vector weights [N] from a per-example mask ([B] or any prefix of `lead_shape`)."""
  if mask is None:
    return jnp.ones((int(np.prod(lead_shape)),), jnp.float32)
  mask = jnp.asarray(mask, jnp.float32)
  if mask.shape != lead_shape[: mask.ndim]:
    raise ValueError(
      f"VectorQuantizer: mask shape {mask.shape} does not match the leading axes "
      f"{lead_shape} of the input"
    )
  mask = mask.reshape(mask.shape + (1,) * (len(lead_shape) - mask.ndim))
  return jnp.broadcast_to(mask, lead_shape).reshape(-1)


def _weighted_mse(a: jax.Array, b: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of (a - b)^2 over vectors weighted by `weights` [N] and over the last axis."""
  per_vector = jnp.mean(jnp.square(a - b), axis=-1)
  total = jnp.sum(weights)
  return jnp.sum(weights * per_vector) / jnp.where(total > 0, total, 1.0)


class VectorQuantizer(nn.Module):
  """Nearest-neighbour quantizer with a straight-through estimator.

  Attributes:
    num_codes: codebook size K.
    code_dim: vector size D; the input's last axis must equal it.
    commitment_cost: weight of the commitment term in `vq_loss`.
    use_ema: learn the codebook by EMA of assigned vectors instead of the codebook loss.
    ema_decay: EMA decay of cluster sizes and embedding sums.
    ema_eps: Laplace smoothing of the cluster sizes (keeps empty clusters from dividing by 0).
    init_scale: codebook initialized uniform in [-init_scale, init_scale].
    dead_code_threshold: with EMA, codes whose EMA usage count (vectors per batch) falls below
      this are re-initialized from random encoder outputs of the batch; 0 disables.
    cosine: choose the nearest code by cosine similarity (inputs and codes l2-normalized for
      the lookup only, as DAC's codebooks; the losses and the output use the raw vectors).
    rotation_trick: pass gradients through the rotation and rescaling that takes each input
      to its code (Fifty et al. 2024, "Restructuring vector quantization with the rotation
      trick") instead of straight through; the output's value is the code either way.
    dtype: dtype of the returned `quantized`; distances and losses are always float32.
  """

  num_codes: int = 10
  code_dim: int = 64
  commitment_cost: float = 0.25
  use_ema: bool = False
  ema_decay: float = 0.99
  ema_eps: float = 1e-5
  init_scale: float = 0.1
  dead_code_threshold: float = 0.0
  cosine: bool = False
  rotation_trick: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool, mask: jax.Array | None = None) -> dict:
    """Quantizes `z` [..., code_dim].

    Args:
      z: encoder outputs; every vector along the last axis is quantized independently.
      train: update the EMA statistics (when `vq_stats` is mutable).
      mask: optional per-example weights ([B] or a prefix of z.shape[:-1]); padded examples
        (weight 0) count neither in the losses, the code counts nor the EMA statistics.

    Returns:
      dict with `quantized` (z.shape, straight-through), `codes` int32 z.shape[:-1],
      float32 scalars `vq_loss`, `codebook_loss`, `commitment_loss`, `perplexity`, and
      `code_counts` float32 [num_codes].
    """
    self._check(z)
    lead_shape = z.shape[:-1]
    flat = z.reshape(-1, self.code_dim).astype(jnp.float32)
    weights = _position_weights(mask, lead_shape)

    if self.use_ema:
      stats = self._ema_stats()
      codebook = stats["codebook"].value
    else:
      codebook = self.param(
        "codebook", _uniform_init(self.init_scale), (self.num_codes, self.code_dim), jnp.float32
      )

    if self.cosine:
      codes = nearest_codes(_unit(flat), _unit(codebook))
    else:
      codes = nearest_codes(flat, codebook)
    q = jnp.take(codebook, codes, axis=0)
    counts = jax.ops.segment_sum(weights, codes, num_segments=self.num_codes)

    # The codebook term pulls codes toward (frozen) encoder outputs; the commitment term pulls
    # the encoder toward its (frozen) codes. With EMA the codebook moves by the update below.
    codebook_loss = _weighted_mse(jax.lax.stop_gradient(flat), q, weights)
    commitment_loss = _weighted_mse(flat, jax.lax.stop_gradient(q), weights)
    vq_loss = self.commitment_cost * commitment_loss
    if not self.use_ema:
      vq_loss = vq_loss + codebook_loss

    if (
      self.use_ema and train and self.is_mutable_collection(VQ_STATS) and not self.is_initializing()
    ):
      self._ema_update(stats, flat, codes, counts, weights)

    if self.rotation_trick:
      quantized = rotate_to(flat, q)
    else:
      quantized = flat + jax.lax.stop_gradient(q - flat)
    return {
      "quantized": quantized.reshape(z.shape).astype(self.dtype),
      "codes": codes.reshape(lead_shape),
      "vq_loss": vq_loss,
      "codebook_loss": codebook_loss,
      "commitment_loss": commitment_loss,
      "perplexity": perplexity_from_counts(counts),
      "code_counts": counts,
    }

  def lookup(self, codes: jax.Array) -> jax.Array:
    """The codebook rows of int `codes` (any shape) -> codes.shape + (code_dim,)."""
    if self.use_ema:
      codebook = self.get_variable(VQ_STATS, "codebook")
    else:
      codebook = self.get_variable("params", "codebook")
    return jnp.take(codebook, jnp.asarray(codes, jnp.int32), axis=0).astype(self.dtype)

  def _check(self, z: jax.Array) -> None:
    if z.ndim < 2 or z.shape[-1] != self.code_dim:
      raise ValueError(
        f"VectorQuantizer: expected input [..., {self.code_dim}], got shape {z.shape}"
      )
    if self.dead_code_threshold > 0 and not self.use_ema:
      raise ValueError(
        "VectorQuantizer: dead_code_threshold > 0 needs use_ema=True "
        "(restarts rewrite the codebook, which is only state under EMA)"
      )

  def _ema_stats(self) -> dict[str, nn.Variable]:
    """The EMA codebook state. Cluster sizes start at 1 with embed_sum = codebook, so a code
    that is never assigned keeps its initial value instead of being divided by ~0."""
    codebook = self.variable(
      VQ_STATS,
      "codebook",
      lambda: _uniform_init(self.init_scale)(
        self.make_rng("params"), (self.num_codes, self.code_dim)
      ),
    )
    cluster_size = self.variable(
      VQ_STATS, "cluster_size", lambda: jnp.ones((self.num_codes,), jnp.float32)
    )
    embed_sum = self.variable(VQ_STATS, "embed_sum", lambda: codebook.value)
    return {"codebook": codebook, "cluster_size": cluster_size, "embed_sum": embed_sum}

  def _ema_update(self, stats, flat, codes, counts, weights) -> None:
    decay = self.ema_decay
    batch_sums = jax.ops.segment_sum(weights[:, None] * flat, codes, num_segments=self.num_codes)
    cluster_size = decay * stats["cluster_size"].value + (1.0 - decay) * counts
    embed_sum = decay * stats["embed_sum"].value + (1.0 - decay) * batch_sums
    if self.dead_code_threshold > 0:
      cluster_size, embed_sum = self._restart_dead_codes(cluster_size, embed_sum, flat, weights)
    stats["cluster_size"].value = cluster_size
    stats["embed_sum"].value = embed_sum
    stats["codebook"].value = embed_sum / self._smoothed_sizes(cluster_size)[:, None]

  def _smoothed_sizes(self, cluster_size: jax.Array) -> jax.Array:
    """Laplace smoothing: every size gets eps, then rescaled so the total is unchanged."""
    total = jnp.sum(cluster_size)
    return (cluster_size + self.ema_eps) / (total + self.num_codes * self.ema_eps) * total

  def _restart_dead_codes(self, cluster_size, embed_sum, flat, weights):
    """Re-seeds codes used less than the threshold with distinct random batch vectors.

    The restarted code gets cluster size = threshold and embed_sum = vector * threshold, so it
    sits exactly on that vector and must win assignments to stay alive.
    """
    n = flat.shape[0]
    dead = cluster_size < self.dead_code_threshold
    total = jnp.sum(weights)
    probs = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 1.0 / n)
    picks = jax.random.choice(
      self.make_rng("vq"), n, (self.num_codes,), replace=n < self.num_codes, p=probs
    )
    fresh = jnp.take(flat, picks, axis=0)
    threshold = jnp.float32(self.dead_code_threshold)
    cluster_size = jnp.where(dead, threshold, cluster_size)
    embed_sum = jnp.where(dead[:, None], fresh * threshold, embed_sum)
    return cluster_size, embed_sum


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def rotate_to(e: jax.Array, q: jax.Array) -> jax.Array:
  """q's value with the rotation trick's gradient: each row e [N, D] mapped by the (constant)
  rotation that turns e's direction into q's and the scaling ||q|| / ||e||, R e' = e' -
  2 r (r.e') + 2 q^ (e^.e') with r the unit bisector of e^ and q^; the decoder's gradient
  reaches e through that map, so it keeps the angle between e and its code."""
  e_hat, q_hat = jax.lax.stop_gradient(_unit(e)), jax.lax.stop_gradient(_unit(q))
  r = _unit(e_hat + q_hat)
  scale = jax.lax.stop_gradient(
    jnp.linalg.norm(q, axis=-1, keepdims=True)
    / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-8)
  )
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rotated = e - 2.0 * r * dot(r, e) + 2.0 * q_hat * dot(e_hat, e)
  return scale * rotated


# ----------------------------------------------------------------------------------------------
# Initialization from data.


def kmeans_init_residual(
  encoder_outputs, num_codes: int, levels: int, *, seed: int = 0, iters: int = 20
) -> list[np.ndarray]:
  """Codebooks for a residual stack: k-means on the vectors, then on what the nearest centers
  leave, level by level (each [num_codes, D])."""
  residual = np.asarray(encoder_outputs, np.float32)
  books = []
  for level in range(levels):
    centers = kmeans_init(residual, num_codes, seed=seed + level, iters=iters)
    books.append(centers)
    residual = residual - centers[np.asarray(nearest_codes(residual, centers))]
  return books


def kmeans_init(
  encoder_outputs: np.ndarray, num_codes: int, *, iters: int = 20, seed: int = 0
) -> np.ndarray:
  """k-means++ seeding then `iters` Lloyd iterations; returns centers float32 [num_codes, D].

  Meant for initializing a codebook from encoder outputs of a few batches (see
  `with_codebook`). Clusters that lose all their points keep their previous center.
  """
  x = np.asarray(encoder_outputs, np.float32)
  if x.ndim != 2:
    raise ValueError(f"kmeans_init: expected encoder outputs [N, code_dim], got {x.shape}")
  if x.shape[0] < num_codes:
    raise ValueError(f"kmeans_init: need at least num_codes={num_codes} vectors, got {x.shape[0]}")
  centers = _kmeans(jnp.asarray(x), jax.random.key(seed), num_codes=num_codes, iters=iters)
  return np.asarray(centers)


@functools.partial(jax.jit, static_argnames=("num_codes", "iters"))
def _kmeans(x: jax.Array, key: jax.Array, *, num_codes: int, iters: int) -> jax.Array:
  centers = _kmeans_plus_plus(x, key, num_codes)

  def lloyd_step(centers, _):
    codes = nearest_codes(x, centers)
    sums = jax.ops.segment_sum(x, codes, num_segments=num_codes)
    sizes = jax.ops.segment_sum(jnp.ones(x.shape[:1]), codes, num_segments=num_codes)
    centers = jnp.where(sizes[:, None] > 0, sums / jnp.maximum(sizes, 1.0)[:, None], centers)
    return centers, None

  centers, _ = jax.lax.scan(lloyd_step, centers, None, length=iters)
  return centers


def _kmeans_plus_plus(x: jax.Array, key: jax.Array, num_codes: int) -> jax.Array:
  """Each new center is drawn with probability proportional to its squared distance to the
  nearest center so far, which spreads the seeds over separated clusters."""
  keys = jax.random.split(key, num_codes)
  first = x[jax.random.randint(keys[0], (), 0, x.shape[0])]
  centers = jnp.zeros((num_codes, x.shape[1]), x.dtype).at[0].set(first)
  d2 = jnp.sum(jnp.square(x - first), axis=-1)

  def add_center(i, carry):
    centers, d2 = carry
    # All-zero distances (duplicates only) fall back to uniform sampling.
    logits = jnp.where(jnp.sum(d2) > 0, jnp.log(d2), 0.0)
    new = x[jax.random.categorical(keys[i], logits)]
    return centers.at[i].set(new), jnp.minimum(d2, jnp.sum(jnp.square(x - new), axis=-1))

  centers, _ = jax.lax.fori_loop(1, num_codes, add_center, (centers, d2))
  return centers


def with_codebook(variables, codebook, where: str | None = None):
  """Returns `variables` with the (single) quantizer's codebook replaced by `codebook`; with
  several quantizers (a residual stack), the one whose path holds the module name `where`
  (e.g. 'level_1').

  Writes `params/.../codebook` (gradient-learned codebook) and, when present, the EMA state
  `vq_stats/.../codebook` together with `embed_sum = codebook * cluster_size`, so the next EMA
  step starts from the new codes.
  """
  codebook = jnp.asarray(codebook, jnp.float32)
  frozen = isinstance(variables, flax.core.FrozenDict)
  flat = traverse_util.flatten_dict(flax.core.unfreeze(variables))
  targets = [k for k in flat if k[-1] == "codebook" and k[0] in ("params", VQ_STATS)]
  if where is not None:
    targets = [k for k in targets if where in k]
  if not targets:
    raise ValueError("with_codebook: no 'codebook' in params or vq_stats")
  if len({k[1:-1] for k in targets}) > 1:
    raise ValueError(
      f"with_codebook: several quantizers {sorted(targets)}; pass one module's variables"
    )
  for key in targets:
    if flat[key].shape != codebook.shape:
      raise ValueError(
        f"with_codebook: codebook shape {codebook.shape} != {flat[key].shape} at {'/'.join(key)}"
      )
    flat[key] = codebook
    if key[0] == VQ_STATS:
      sizes = flat[key[:-1] + ("cluster_size",)]
      flat[key[:-1] + ("embed_sum",)] = codebook * sizes[:, None]
  out = traverse_util.unflatten_dict(flat)
  return flax.core.freeze(out) if frozen else out
