"""Music transformer family (the Transformer-VAE-GAN): causal LM, hierarchical-latent VAE, VAE-GAN.

One module, `MusicTransformer`, serves the three training stages (`mode`):

* 'transformer': a decoder-only causal LM over MIDI tokens (`jaxvae.symbolic.tokenizers`).
* 'vae': a bidirectional encoder gives a hierarchical Gaussian posterior; the same causal
  decoder, conditioned on z, predicts the window.
* 'vaegan': the VAE plus a multi-scale discriminator over (soft) token sequences.

Parameters live under two top-level names so that the stages can hand weights on and the
GAN step can give each side its own optimizer:

    params['generator']     = {'decoder', 'encoder'?, 'conditioner'?}
    params['discriminator'] = {...}                 # mode 'vaegan' only

Batch and output contract (see docs/ARCHITECTURE.md):
  `batch['tokens']` int32 [B, T] (PAD = 0 padded), `batch['mask']` float32 [B].
  The decoder reads `tokens[:, :-1]` and its logits [B, T-1, V] (float32) predict
  `tokens[:, 1:]`: the input is shifted, so the decoder can never see the token it predicts
  (the original fed the targets unshifted and could copy them).
  VAE modes add `mu`, `logvar`, `z`: float32 [B, 66], the concatenation of three levels in
  the order of `latent_levels(config)`: global [0:22], regional [22:44], fine [44:66].

Attention variants (all causal in the decoder; `attention_allowed` is the one definition):
  'full':         key s is visible to query t when s <= t.
  'sliding':      s <= t and t - s < window (the query and the window - 1 keys before it).
  'hierarchical': sliding, plus every key with s % global_stride == 0 and s <= t.
The windowed variants run blockwise (blocks of `window` queries attend to their own and the
previous block of keys; strided global keys are a small extra key set), so memory is
O(T * (window + T / global_stride)), never T x T.

Hierarchical latent (66 = 3 x 22 by default). Token positions are split into regions over
`latent_span` positions (region of t = floor(t * R / latent_span), clipped to R - 1 so
generation past the span stays in the last region):
  global:   masked mean of the encoder states over the window -> dense -> mu, logvar (22);
  regional: masked means over 8 regions, concatenated [8 * d] -> dense -> mu, logvar (22);
  fine:     masked means over 32 regions, concatenated [32 * d] -> dense -> mu, logvar (22).
PAD positions take no part in attention or pooling. The encoder uses full bidirectional
attention (it runs on training windows, 512 tokens in the seed).
The decoder gets z as a per-position vector added to its token embeddings: a projection of
the global code, plus row r(t) of the regional code projected to 8 vectors, plus row f(t)
of the fine code projected to 32 vectors.

Generation (`jaxvae.sampling.tokens.generate`) runs the decoder (`decode_tokens` with
`decode=True`) one token at a time against a full-length key/value cache inside one jitted
`lax.fori_loop`; the window still applies.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.errors import ConfigError
from jaxvae.models import layers
from jaxvae.symbolic.midi import PAD

ATTENTION_KINDS = ("full", "sliding", "hierarchical")
ATTENTION_IMPLS = ("dense", "prefix", "blockwise", "dpa")
MODES = ("transformer", "vae", "vaegan")
POSITIONS = ("sinusoidal", "learned")
_NEG = -1e30  # finite, so a fully masked row gives a uniform softmax rather than NaN.


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters; `config.model` fields of the same names override these defaults."""

  vocab_size: int = 774  # config 0: the data's tokenizer's (DataSpec.vocab_size)
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 1024
  dropout: float = 0.1
  max_len: int = 2048  # longest sequence (training window or generation) the model accepts.
  positions: str = "sinusoidal"  # or 'learned' (max_len rows).
  attention: str = "full"
  # How full causal attention computes: 'dense' (masked T x T scores; this class's default,
  # so old run files keep it), 'prefix' (each block of attention_block queries against its
  # keys' prefix: the configs' default), 'blockwise' (only the blocks the mask allows, online
  # softmax, no T x T matrix) or 'dpa' (jax.nn.dot_product_attention with cuDNN's fused kernel
  # on a GPU in bfloat16 / float16; BUILD_NOTES.md has the timings).
  # attention_block also sizes the blocks a KV-cached sampling step reads.
  attention_impl: str = "dense"
  attention_block: int = 128
  window: int = 128
  global_stride: int = 64
  mode: str = "transformer"
  enc_layers: int = 2
  latent_global: int = 22  # width of each latent level
  latent_regional: int = 22
  latent_fine: int = 22
  latent_regions: int = 8  # number of regions of the regional / fine levels
  latent_fine_regions: int = 32
  latent_span: int = 0  # positions the regions tile; 0: the data window (spec) or 512.
  disc_scales: tuple[int, ...] = (1, 2, 4)  # time pooling factor of each discriminator
  disc_dim: int = 128
  disc_layers: int = 3
  gumbel_tau: float = 1.0  # read by the VAE-GAN step (variants/music_transformer)

  @property
  def latent_dim(self) -> int:
    return self.latent_global + self.latent_regional + self.latent_fine

  @property
  def is_vae(self) -> bool:
    return self.mode in ("vae", "vaegan")


def config_from(model_config, spec=None) -> TransformerConfig:
  """`ml_collections` model config (any subset of the fields) -> a checked TransformerConfig."""
  values = {}
  for field in dataclasses.fields(TransformerConfig):
    if field.name in model_config:
      value = model_config[field.name]
      values[field.name] = tuple(value) if field.name == "disc_scales" else value
  tokens = getattr(spec, "vocab_size", 0)
  if tokens and values.get("vocab_size", 0) in (0, tokens):
    values["vocab_size"] = tokens  # model.vocab_size 0: the data's tokenizer decides
  elif not tokens and values.get("vocab_size") == 0:
    del values["vocab_size"]  # no data yet (a config check): the events' size stands in
  elif tokens:
    raise ConfigError(
      f"config key 'model.vocab_size' is {values['vocab_size']}, but the data's tokenizer "
      f"({spec.tokenizer.describe()}) has {tokens} ids; set model.vocab_size=0 to follow it"
    )
  cfg = TransformerConfig(**values)
  if cfg.latent_span <= 0:
    shape = getattr(spec, "input_shape", None)
    span = int(shape[-1]) if shape else 512
    cfg = dataclasses.replace(cfg, latent_span=span)
  check(cfg)
  return cfg


def check(cfg: TransformerConfig) -> None:
  """Raises ValueError naming the `model.<key>` that is wrong."""

  def bad(key, msg):
    raise ValueError(f"config key 'model.{key}' is {getattr(cfg, key)!r}: {msg}")

  if cfg.attention not in ATTENTION_KINDS:
    bad("attention", f"expected one of {ATTENTION_KINDS}")
  if cfg.mode not in MODES:
    bad("mode", f"expected one of {MODES}")
  if cfg.attention_impl not in ATTENTION_IMPLS:
    bad("attention_impl", f"expected one of {ATTENTION_IMPLS}")
  if cfg.positions not in POSITIONS:
    bad("positions", f"expected one of {POSITIONS}")
  if cfg.d_model % cfg.num_heads:
    bad("d_model", f"must be a multiple of model.num_heads ({cfg.num_heads})")
  for key in (
    "window",
    "global_stride",
    "attention_block",
    "max_len",
    "latent_span",
    "vocab_size",
    "latent_regions",
    "latent_fine_regions",
  ):
    if getattr(cfg, key) <= 0:
      bad(key, "must be positive")
  if not cfg.disc_scales or min(cfg.disc_scales) < 1:
    bad("disc_scales", "expected a non-empty tuple of integers >= 1")


def latent_levels(cfg: TransformerConfig) -> dict[str, slice]:
  """Level name -> its slice of the concatenated latent (`mu`, `logvar`, `z`)."""
  g, r = cfg.latent_global, cfg.latent_regional
  return {
    "global": slice(0, g),
    "regional": slice(g, g + r),
    "fine": slice(g + r, g + r + cfg.latent_fine),
  }


# ---------------------------------------------------------------------------------------------
# Attention functions (pure; q, k, v are [B, T, H, D])
# ---------------------------------------------------------------------------------------------


def attention_allowed(q_pos, k_pos, kind: str, window: int, global_stride: int):
  """Which keys a query may see, for every variant: the reference every path must equal."""
  causal = k_pos <= q_pos
  if kind == "full":
    return causal
  local = causal & (q_pos - k_pos < window)
  if kind == "sliding":
    return local
  return local | (causal & (k_pos % global_stride == 0))


def _scores(spec: str, q, k):
  scale = 1.0 / math.sqrt(q.shape[-1])
  return jnp.einsum(spec, q, k, preferred_element_type=jnp.float32) * scale


def dense_attention(q, k, v, allowed):
  """Softmax attention with a boolean `allowed` broadcastable to [B, H, Tq, Tk]."""
  scores = jnp.where(allowed, _scores("bqhd,bkhd->bhqk", q, k), _NEG)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def causal_attention(q, k, v):
  t = jnp.arange(q.shape[1])
  return dense_attention(q, k, v, attention_allowed(t[:, None], t[None, :], "full", 0, 0))


def blockwise_causal_attention(q, k, v, block: int):
  """Causal attention that computes only the blocks the mask allows (an online softmax).

  Queries and keys are cut into `n` blocks of `block` positions; pass `o` scores every query
  block `i >= o` against key block `i - o` (one batched einsum of static shape), and the running
  max, sum and output of each query row are rescaled as in flash attention. The n(n+1)/2 blocks
  it computes are the causal triangle plus half the diagonal blocks, so its FLOPs approach the
  model's (T(T+1)/2 scores per head) as blocks get smaller, and no T x T matrix is ever built.
  Equal to `causal_attention` up to float rounding; padded positions past T are never seen by
  a real query (they lie after it).
  """
  b, t, h, d = q.shape
  size = min(block, t)
  n = -(-t // size)
  qb, kb, vb = (_blocks(x, n, size) for x in (q, k, v))
  inside = jnp.arange(size)[:, None] >= jnp.arange(size)[None, :]  # the diagonal blocks' mask
  m = jnp.full((b, h, n, size), -jnp.inf, jnp.float32)  # running max of each query row
  total = jnp.zeros((b, h, n, size), jnp.float32)  # running sum of exp(score - max)
  acc = jnp.zeros((b, n, size, h, d), jnp.float32)
  for o in range(n):
    scores = _scores("bnqhd,bnkhd->bhnqk", qb[:, o:], kb[:, : n - o])
    if o == 0:
      scores = jnp.where(inside, scores, _NEG)
    m_new = jax.lax.stop_gradient(jnp.maximum(m[:, :, o:], scores.max(-1)))  # cancels exactly
    rescale = jnp.exp(m[:, :, o:] - m_new)
    p = jnp.exp(scores - m_new[..., None])
    total = total.at[:, :, o:].set(total[:, :, o:] * rescale + p.sum(-1))
    update = jnp.einsum(
      "bhnqk,bnkhd->bnqhd", p.astype(v.dtype), vb[:, : n - o], preferred_element_type=jnp.float32
    )
    acc = acc.at[:, o:].set(acc[:, o:] * jnp.moveaxis(rescale, 1, -1)[..., None] + update)
    m = m.at[:, :, o:].set(m_new)
  out = acc / jnp.moveaxis(total, 1, -1)[..., None]
  return out.reshape(b, n * size, h, d)[:, :t].astype(v.dtype)


def prefix_causal_attention(q, k, v, block: int):
  """Causal attention by query blocks: the queries of block i attend to the keys of blocks 0
  to i only, one plain softmax per block (no online rescaling; its division applied to the
  block's output, [.., D], instead of its probabilities, [.., keys]), so the FLOPs are
  (n + 1) / 2n of the dense scores' for n blocks (62.5 % at n = 4); the mask only removes
  keys in the diagonal block (the where runs over the prefix: cheap). Heads first
  ([B, H, T, D]) inside, so each block's matmuls batch over contiguous [T, D] slices. Its
  scores add up to half a T x T matrix (the memory-light path is 'blockwise'); on the 2-core
  CPU it is the fastest full causal attention (BUILD_NOTES.md). Equal to `causal_attention`
  up to float rounding."""
  t = q.shape[1]
  qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
  outs = []
  for start in range(0, t, block):
    end = min(start + block, t)
    allowed = jnp.arange(end)[None, :] <= jnp.arange(start, end)[:, None]
    scores = jnp.where(
      allowed, _scores("bhqd,bhkd->bhqk", qh[:, :, start:end], kh[:, :, :end]), _NEG
    )
    # The softmax's division after the values' matmul: over [.., D], not the scores' [.., T].
    e = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
    out = jnp.einsum(  # unnormalized: float32, as it may exceed float16's range
      "bhqk,bhkd->bhqd", e.astype(v.dtype), vh[:, :, :end], preferred_element_type=jnp.float32
    )
    outs.append((out / e.sum(-1, keepdims=True)).astype(v.dtype))
  return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)


def cached_attention(q, keys, values, position, allowed, block: int):
  """One query position q [B, 1, H, D] against a key/value cache [B, H, T, D] filled up to
  `position`, reading only the `block`-position blocks that hold keys up to it: a loop of
  position // block + 1 steps with an online softmax, so a step early in a sequence does not
  read the whole cache (the cache's reads were most of a sampling step's time; BUILD_NOTES.md).
  `allowed(k_pos [block]) -> [1, block]` is the variant's mask. Equal to dense attention over
  the cache up to float rounding."""
  qh = q[:, 0]  # [B, H, D]
  b, h, d = qh.shape

  def body(i, carry):
    m, total, acc = carry  # running max and sum [B, H], output [B, H, D]
    start = i * block
    k = jax.lax.dynamic_slice_in_dim(keys, start, block, axis=2)
    v = jax.lax.dynamic_slice_in_dim(values, start, block, axis=2)
    scores = jnp.where(allowed(start + jnp.arange(block))[0], _scores("bhd,bhkd->bhk", qh, k), _NEG)
    m_new = jnp.maximum(m, scores.max(-1))
    p = jnp.exp(scores - m_new[..., None])
    rescale = jnp.exp(m - m_new)
    update = jnp.einsum("bhk,bhkd->bhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return m_new, total * rescale + p.sum(-1), acc * rescale[..., None] + update

  m = jnp.full((b, h), -jnp.inf, jnp.float32)
  init = (m, jnp.zeros((b, h), jnp.float32), jnp.zeros((b, h, d), jnp.float32))
  _, total, acc = jax.lax.fori_loop(0, position // block + 1, body, init)
  return (acc / total[..., None])[:, None].astype(values.dtype)


def _blocks(x, n_blocks: int, size: int):
  pad = n_blocks * size - x.shape[1]
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
  return x.reshape(x.shape[0], n_blocks, size, *x.shape[2:])


def _with_previous(x):
  """[B, n, W, ...] -> [B, n, 2W, ...]: each block preceded by the one before (zeros first)."""
  prev = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
  return jnp.concatenate([prev, x], axis=2)


def local_attention(q, k, v, window: int, global_stride: int = 0):
  """Causal sliding-window attention, blockwise, plus strided global keys when stride > 0.

  Queries are cut into blocks of `window`; a query at t needs keys t - window + 1 .. t, which
  lie in its own block and the previous one, so scores are [.., T / W, W, 2W]. Global keys
  (every `global_stride`-th position) that are outside the window join the same softmax as a
  second, small key set, so each key is counted once.
  """
  b, t, h, d = q.shape
  size = min(window, t)
  n = -(-t // size)
  qb = _blocks(q, n, size)
  kb, vb = _with_previous(_blocks(k, n, size)), _with_previous(_blocks(v, n, size))
  q_pos = (jnp.arange(n)[:, None] * size + jnp.arange(size))[:, :, None]  # [n, W, 1]
  k_pos = ((jnp.arange(n)[:, None] - 1) * size + jnp.arange(2 * size))[:, None, :]
  local_ok = (k_pos >= 0) & attention_allowed(q_pos, k_pos, "sliding", window, 0)
  scores = jnp.where(local_ok, _scores("bnqhd,bnkhd->bhnqk", qb, kb), _NEG)
  if global_stride:
    kg, vg = k[:, ::global_stride], v[:, ::global_stride]
    g_pos = jnp.arange(kg.shape[1]) * global_stride
    global_ok = (g_pos <= q_pos) & (q_pos - g_pos >= window)
    g_scores = jnp.where(global_ok, _scores("bnqhd,bghd->bhnqg", qb, kg), _NEG)
    scores = jnp.concatenate([scores, g_scores], axis=-1)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhnqk,bnkhd->bnqhd", probs[..., : 2 * size], vb)
  if global_stride:
    out = out + jnp.einsum("bhnqg,bghd->bnqhd", probs[..., 2 * size :], vg)
  return out.reshape(b, n * size, h, d)[:, :t]


def attend(q, k, v, kind: str, window: int, global_stride: int, impl: str = "dense", block=64):
  """Dispatch to the causal attention of `kind` (non-cached path); full attention by `impl`:
  'dense' (the T x T scores, masked), 'prefix' (`prefix_causal_attention`), 'blockwise'
  (`blockwise_causal_attention`) or 'dpa'
  (`jax.nn.dot_product_attention`: cuDNN's fused attention on a GPU in bfloat16 / float16,
  XLA's ops elsewhere; not yet timed on a GPU)."""
  if kind == "full":
    if impl == "blockwise" and q.shape[1] > block:
      return blockwise_causal_attention(q, k, v, block)
    if impl == "prefix" and q.shape[1] > block:
      return prefix_causal_attention(q, k, v, block)
    if impl == "dpa":
      # implementation=None is XLA's ops in jax 0.10 (no automatic choice yet): ask for
      # cuDNN where it applies, a GPU in a 16-bit dtype.
      cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
      return jax.nn.dot_product_attention(
        q, k, v, is_causal=True, implementation="cudnn" if cudnn else "xla"
      )
    return causal_attention(q, k, v)
  return local_attention(q, k, v, window, global_stride if kind == "hierarchical" else 0)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
  """Multi-head self-attention; causal with a variant, or bidirectional with a key mask.

  With `decode=True` it keeps a full-length key/value cache (collection 'cache') and takes
  one position at a time; the window still applies through `attention_allowed`.
  """

  num_heads: int
  kind: str = "full"
  window: int = 128
  global_stride: int = 64
  causal: bool = True
  decode: bool = False
  dtype: Any = jnp.float32
  impl: str = "dense"  # full causal attention: 'dense', 'prefix', 'blockwise', 'dpa' (`attend`)
  block: int = 64

  @nn.compact
  def __call__(self, x, positions, key_mask=None):
    d = x.shape[-1]
    proj = functools.partial(
      nn.DenseGeneral, features=(self.num_heads, d // self.num_heads), dtype=self.dtype
    )
    q, k, v = proj(name="query")(x), proj(name="key")(x), proj(name="value")(x)
    if not self.causal:
      out = dense_attention(q, k, v, key_mask[:, None, None, :])
    elif self.decode:
      out = self._cached(q, k, v, positions)
    else:
      out = attend(q, k, v, self.kind, self.window, self.global_stride, self.impl, self.block)
    return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name="out")(out)

  def _cached(self, q, k, v, positions):
    """One step against the cache; at init the cache is sized by the (full-length) input.
    The cache is kept [B, H, T, D], heads outside positions: the step's attention then reads
    it as it lies (a [B, T, H, D] cache made XLA:CPU transpose the whole cache every step:
    13.0 instead of 7.3 ms a step at 512 positions, batch 16; BUILD_NOTES.md)."""
    initializing = self.is_initializing()
    b, t, h, d = k.shape
    cache_k = self.variable("cache", "cached_key", jnp.zeros, (b, h, t, d), k.dtype)
    cache_v = self.variable("cache", "cached_value", jnp.zeros, (b, h, t, d), v.dtype)
    if initializing:
      return attend(q, k, v, self.kind, self.window, self.global_stride)
    start = (0, 0, positions[0], 0)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)
    cache_k.value = jax.lax.dynamic_update_slice(cache_k.value, heads_first(k), start)
    cache_v.value = jax.lax.dynamic_update_slice(cache_v.value, heads_first(v), start)
    allowed = lambda k_pos: attention_allowed(
      positions[:, None], k_pos[None, :], self.kind, self.window, self.global_stride
    )
    t = cache_k.value.shape[2]
    if q.shape[1] == 1 and t % self.block == 0:
      return cached_attention(q, cache_k.value, cache_v.value, positions[0], allowed, self.block)
    scores = jnp.where(allowed(jnp.arange(t)), _scores("bqhd,bhkd->bhqk", q, cache_k.value), _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bqhd", probs, cache_v.value)


class Block(nn.Module):
  """Pre-LN transformer block: attention and a GELU MLP, each with residual dropout."""

  cfg: TransformerConfig
  causal: bool = True
  decode: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, train: bool, key_mask=None):
    c = self.cfg
    drop = layers.Dropout(c.dropout, deterministic=not train)
    h = nn.LayerNorm(dtype=self.dtype)(x)
    h = SelfAttention(
      c.num_heads,
      c.attention,
      c.window,
      c.global_stride,
      self.causal,
      self.decode,
      self.dtype,
      c.attention_impl,
      c.attention_block,
    )(h, positions, key_mask)
    x = x + drop(h)
    h = nn.LayerNorm(dtype=self.dtype)(x)
    h = nn.Dense(c.d_ff, dtype=self.dtype)(h)
    h = nn.Dense(c.d_model, dtype=self.dtype)(nn.gelu(h))
    return x + drop(h)


def sinusoidal(positions, d: int):
  """[T] int -> [T, d] float32 sine/cosine position codes."""
  freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, d, 2) / d)
  angle = positions[:, None].astype(jnp.float32) * freq[None, :]
  return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)[:, :d]


class TokenEmbed(nn.Module):
  """Token + position embedding. Rows start at std d^-1/2 and inputs are scaled by sqrt(d):
  inputs are O(1) per feature while the tied output logits start O(1) as well."""

  cfg: TransformerConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.cfg
    self.embed = nn.Embed(
      c.vocab_size,
      c.d_model,
      dtype=self.dtype,
      embedding_init=nn.initializers.normal(c.d_model**-0.5),
    )
    if c.positions == "learned":
      self.pos = nn.Embed(
        c.max_len, c.d_model, dtype=self.dtype, embedding_init=nn.initializers.normal(1.0)
      )

  def __call__(self, tokens, positions):
    if tokens.shape[1] > self.cfg.max_len:  # learned positions would silently clip
      raise ValueError(
        f"a window of {tokens.shape[1]} tokens is longer than model.max_len = {self.cfg.max_len}"
      )
    x = self.embed(tokens) * jnp.asarray(math.sqrt(self.cfg.d_model), self.dtype)
    if self.cfg.positions == "learned":
      return x + self.pos(positions)[None]
    return x + sinusoidal(positions, self.cfg.d_model).astype(self.dtype)[None]

  def logits(self, h):
    """Tied output projection, accumulated in float32."""
    table = self.embed.embedding.astype(self.dtype)
    return jnp.einsum("btd,vd->btv", h, table, preferred_element_type=jnp.float32)


class CausalDecoder(nn.Module):
  """Token embedding (+ optional per-position z conditioning) -> causal blocks -> logits."""

  cfg: TransformerConfig
  decode: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.tokens = TokenEmbed(self.cfg, self.dtype)
    self.drop = layers.Dropout(self.cfg.dropout)
    self.blocks = [
      Block(self.cfg, True, self.decode, self.dtype) for _ in range(self.cfg.num_layers)
    ]
    self.norm = nn.LayerNorm(dtype=self.dtype)

  def __call__(self, tokens, positions, cond, train: bool):
    x = self.tokens(tokens, positions)
    if cond is not None:
      x = x + cond.astype(self.dtype)
    x = self.drop(x, deterministic=not train)
    for block in self.blocks:
      x = block(x, positions, train)
    return self.tokens.logits(self.norm(x))


def region_index(positions, n_regions: int, span: int):
  """Region of each position: R equal parts of `span`, later positions in the last one."""
  return jnp.clip(positions * n_regions // span, 0, n_regions - 1)


class Encoder(nn.Module):
  """Bidirectional encoder -> hierarchical Gaussian posterior (mu, logvar), float32 [B, 66].

  Full (non-windowed) attention: it runs once per training window (T = 512 in the seed).
  PAD positions are masked out of attention and of every pooled mean.
  """

  cfg: TransformerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, train: bool):
    c = self.cfg
    positions = jnp.arange(tokens.shape[1])
    valid = tokens != PAD
    x = TokenEmbed(c, self.dtype, name="embed")(tokens, positions)
    x = layers.Dropout(c.dropout, deterministic=not train)(x)
    for i in range(c.enc_layers):
      x = Block(c, causal=False, dtype=self.dtype, name=f"block_{i}")(x, positions, train, valid)
    x = nn.LayerNorm(dtype=self.dtype)(x).astype(jnp.float32)
    mus, logvars = [], []
    for name, regions, width in (
      ("global", 1, c.latent_global),
      ("regional", c.latent_regions, c.latent_regional),
      ("fine", c.latent_fine_regions, c.latent_fine),
    ):
      pooled = self._pool(x, valid, positions, regions)
      stats = nn.Dense(2 * width, name=f"{name}_head")(pooled.reshape(x.shape[0], -1))
      mus.append(stats[:, :width])
      logvars.append(stats[:, width:])
    return jnp.concatenate(mus, -1), jnp.concatenate(logvars, -1)

  def _pool(self, x, valid, positions, regions: int):
    """Masked mean of x over each region: [B, T, d] -> [B, regions, d] (empty regions: 0)."""
    member = jax.nn.one_hot(region_index(positions, regions, self.cfg.latent_span), regions)
    weights = valid.astype(jnp.float32)[:, :, None] * member[None]  # [B, T, R]
    sums = jnp.einsum("btr,btd->brd", weights, x)
    return sums / jnp.maximum(jnp.sum(weights, axis=1), 1.0)[:, :, None]


class LatentConditioner(nn.Module):
  """z [B, 66] and positions [T] -> [B, T, d_model] added to the decoder's embeddings."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, z, positions):
    c = self.cfg
    levels = latent_levels(c)
    z = z.astype(jnp.float32)
    b = z.shape[0]
    cond = nn.Dense(c.d_model, name="global")(z[:, levels["global"]])[:, None, :]
    for name, regions in (("regional", c.latent_regions), ("fine", c.latent_fine_regions)):
      table = nn.Dense(regions * c.d_model, name=name)(z[:, levels[name]])
      table = table.reshape(b, regions, c.d_model)
      cond = cond + table[:, region_index(positions, regions, c.latent_span)]
    return cond


class Generator(nn.Module):
  """Everything but the discriminator: decoder, and in VAE modes encoder + conditioner."""

  cfg: TransformerConfig
  decode: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.decoder = CausalDecoder(self.cfg, self.decode, self.dtype)
    if self.cfg.is_vae:
      self.encoder = Encoder(self.cfg, self.dtype)
      self.conditioner = LatentConditioner(self.cfg)
    if self.decode:
      self.index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))

  def encode(self, tokens, train: bool = False):
    return self.encoder(tokens, train)

  def decode_tokens(self, tokens, z=None, train: bool = False):
    """Logits [B, T, V] for the token after each input token (no shift here)."""
    positions = jnp.arange(tokens.shape[1])
    if self.decode and not self.is_initializing():
      positions = positions + self.index.value
      self.index.value = self.index.value + tokens.shape[1]
    cond = None
    if self.cfg.is_vae:
      if z is None:
        raise ValueError("a VAE decoder needs z")
      cond = self.conditioner(z, positions)
    return self.decoder(tokens, positions, cond, train)

  def __call__(self, tokens, train: bool = False, z=None):
    out = {}
    if self.cfg.is_vae:
      mu, logvar = self.encode(tokens, train)
      if z is None:
        z = layers.reparameterize(self, mu, logvar)
      out.update(mu=mu, logvar=logvar, z=z)
    # Shifted: position t reads tokens[:, t] and is scored against tokens[:, t + 1].
    out["logits"] = self.decode_tokens(tokens[:, :-1], z, train)
    return out


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------


def _pool_time(x, factor: int):
  """Mean over non-overlapping groups of `factor` steps: [B, T, ...] -> [B, ceil(T/f), ...]."""
  if factor == 1:
    return x
  t = x.shape[1]
  n = -(-t // factor)
  x = jnp.pad(x, [(0, 0), (0, n * factor - t)] + [(0, 0)] * (x.ndim - 2))
  return x.reshape(x.shape[0], n, factor, *x.shape[2:]).mean(axis=2)


class ScaleDiscriminator(nn.Module):
  """Dilated 1-D convs (no normalization, so R1 and per-example losses stay per example)."""

  dim: int
  layers: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, mask):
    features = []
    for i in range(self.layers):
      h = nn.Conv(self.dim, (5,), kernel_dilation=(2**i,), padding="SAME", dtype=self.dtype)(h)
      h = nn.leaky_relu(h, 0.2)
      features.append(h.astype(jnp.float32))
    per_step = nn.Conv(1, (3,), padding="SAME", dtype=self.dtype)(h)[..., 0].astype(jnp.float32)
    logits = jnp.sum(per_step * mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1e-6)
    return {"logits": logits, "features": features}


class MultiScaleDiscriminator(nn.Module):
  """Soft token distributions [B, T, V] -> one {'logits': [B], 'features': [...]} per scale.

  The first layer is linear in the distribution (a learned embedding applied to it), so a
  one-hot real sequence and a straight-through Gumbel sample are treated alike, and the
  gradient reaches the generator through the probabilities.
  """

  cfg: TransformerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, mask=None):
    c = self.cfg
    if mask is None:
      mask = jnp.ones(inputs.shape[:2], jnp.float32)
    mask = mask.astype(jnp.float32)
    h = nn.Dense(c.disc_dim, use_bias=False, dtype=self.dtype, name="embed")(
      inputs.astype(self.dtype)
    ) * mask[..., None].astype(self.dtype)
    return [
      ScaleDiscriminator(c.disc_dim, c.disc_layers, self.dtype, name=f"scale_{s}")(
        _pool_time(h, s), _pool_time(mask, s)
      )
      for s in c.disc_scales
    ]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class MusicTransformer(nn.Module):
  """See the module docstring. Methods for `apply(..., method=...)`:

  __call__(batch, train=False, z=None) -> {'logits', ['mu', 'logvar', 'z']}; `z` overrides
      the posterior sample (teacher-forced decoding from a chosen latent).
  encode(tokens) -> (mu, logvar); decode_tokens(tokens, z=None) -> logits (unshifted);
  discriminate(inputs [B, T, V], mask [B, T] | None) -> list of per-scale dicts.
  """

  cfg: TransformerConfig
  dtype: Any = jnp.float32
  decode: bool = False

  def setup(self):
    self.generator = Generator(self.cfg, self.decode, self.dtype)
    if self.cfg.mode == "vaegan":
      self.discriminator = MultiScaleDiscriminator(self.cfg, self.dtype)

  def __call__(self, batch, train: bool = False, z=None):
    tokens = batch["tokens"]
    out = self.generator(tokens, train=train, z=z)
    if self.cfg.mode == "vaegan" and self.is_initializing():
      # Create the discriminator's parameters with the rest (it is not used by __call__).
      self.discriminator(jax.nn.one_hot(tokens[:, 1:], self.cfg.vocab_size))
    return out

  def encode(self, tokens, train: bool = False):
    return self.generator.encode(tokens, train)

  def decode_tokens(self, tokens, z=None, train: bool = False):
    return self.generator.decode_tokens(tokens, z, train)

  def discriminate(self, inputs, mask=None):
    return self.discriminator(inputs, mask)


def build_music_transformer(model_config, spec=None, dtype="float32") -> MusicTransformer:
  """Registry builder: `model_config` fields as in TransformerConfig (missing ones default)."""
  return MusicTransformer(config_from(model_config, spec), layers.compute_dtype(dtype))


def param_labels(params) -> dict:
  """'generator' / 'discriminator' label tree for optax.multi_transform."""
  return {name: jax.tree.map(lambda _: name, sub) for name, sub in params.items()}
