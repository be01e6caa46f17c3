"""Sampling from a token model: nucleus / top-k sampling of one step, a jitted generator
with a key/value cache (one token per loop step), the config's sampling settings
(`sample`), posterior means for interpolation, and token rows written as MIDI files.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.models.transformer import MusicTransformer
from jaxvae.symbolic.midi import PAD
from jaxvae.symbolic.midi import START


def sample_logits(logits, rng, temperature=1.0, top_k: int = 0, top_p=1.0):
  """[B, V] logits -> [B] int32 ids. PAD and START are never drawn: neither can follow a
  token inside a piece. `temperature` (0: greedy) and `top_p` (1: off) may be traced, so
  one compiled generator serves every value; `top_k` (0: off) is static."""
  logits = jnp.asarray(logits, jnp.float32).at[:, jnp.array([PAD, START])].set(-jnp.inf)
  greedy = jnp.argmax(logits, -1)
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  top_p = jnp.asarray(top_p, jnp.float32)
  keep = nucleus(jax.nn.softmax(logits, -1), top_p)
  logits = jnp.where((top_p < 1.0) & ~keep, -jnp.inf, logits)
  temperature = jnp.asarray(temperature, jnp.float32)
  sampled = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6), -1)
  return jnp.where(temperature > 0.0, sampled, greedy).astype(jnp.int32)


def nucleus(probs, top_p):
  """[B, V] probabilities -> bool [B, V]: the nucleus of each row, the tokens whose more
  likely tokens hold less than `top_p` of the mass (the likeliest always; tied tokens alike).

  Found without sorting the vocabulary (a sort of 16 x 774 took 1.5 ms a step on XLA:CPU,
  more than the model's step at short lengths; BUILD_NOTES.md): the mass above a threshold,
  g(t) = sum of p > t, falls as t rises, so the nucleus is {p >= t*} with t* the least float
  where g(t*) < top_p, found by bisection on the bits of non-negative float32s (which order
  as their int32 patterns): 31 halvings of [0, max p] end on t* exactly."""
  probs = jnp.asarray(probs, jnp.float32)
  bits = lambda x: jax.lax.bitcast_convert_type(x, jnp.int32)
  above = lambda t: jnp.sum(jnp.where(probs > t[:, None], probs, 0.0), -1)

  def halve(_, bounds):
    lo, hi = bounds  # invariant: g(lo) >= top_p > g(hi), or lo is 0
    mid = lo + (hi - lo) // 2
    low_enough = above(jax.lax.bitcast_convert_type(mid, jnp.float32)) < top_p
    return jnp.where(low_enough, lo, mid), jnp.where(low_enough, mid, hi)

  lo = jnp.zeros(probs.shape[:1], jnp.int32)
  _, hi = jax.lax.fori_loop(0, 31, halve, (lo, bits(jnp.max(probs, -1))))
  return probs >= jax.lax.bitcast_convert_type(hi, jnp.float32)[:, None]


def init_cache(model: MusicTransformer, batch_size: int, length: int, z=None):
  """Zeroed key/value caches for `length` positions (shapes only are traced, nothing runs),
  rounded up to whole `model.attention_block`s where max_len allows: a step then reads only
  the blocks up to its position (`transformer.cached_attention`)."""
  block = int(model.cfg.attention_block)
  if -(-length // block) * block <= model.cfg.max_len:
    length = -(-length // block) * block
  shapes = jax.eval_shape(
    lambda: model.clone(decode=True).init(
      jax.random.key(0), jnp.zeros((batch_size, length), jnp.int32), z, method="decode_tokens"
    )
  )
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def decode_step(model: MusicTransformer, params, cache, tokens, z=None):
  """Feeds tokens [B, 1] at the cache's position: (logits [B, 1, V], updated cache)."""
  logits, updated = model.clone(decode=True).apply(
    {"params": params, "cache": cache}, tokens, z, method="decode_tokens", mutable=["cache"]
  )
  return logits, updated["cache"]


def sampler(model: MusicTransformer, length: int, top_k: int, with_z: bool):
  """The pure generator `run(params, prompt, z, rng, temperature, top_p) -> tokens [B,
  length]`: the prompt `[B, P]` (P < length) kept, the rest sampled one position at a time
  with the key/value cache (B is the prompt's, and may be symbolic under jax.export)."""

  def run(params, prompt, z, rng, temperature, top_p):
    zs = z if with_z else None
    batch_size, prompt_len = prompt.shape
    cache = init_cache(model, batch_size, length, zs)
    tokens = jnp.zeros((batch_size, length), jnp.int32).at[:, :prompt_len].set(prompt)

    def body(i, carry):
      tokens, cache = carry
      current = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
      logits, cache = decode_step(model, params, cache, current, zs)
      chosen = sample_logits(logits[:, 0], jax.random.fold_in(rng, i), temperature, top_k, top_p)
      # Inside the prompt the next token is given, not sampled.
      given = jax.lax.dynamic_slice_in_dim(tokens, i + 1, 1, axis=1)[:, 0]
      chosen = jnp.where(i + 1 < prompt_len, given, chosen)
      tokens = jax.lax.dynamic_update_slice_in_dim(tokens, chosen[:, None], i + 1, axis=1)
      return tokens, cache

    tokens, _ = jax.lax.fori_loop(0, length - 1, body, (tokens, cache))
    return tokens

  return run


@functools.lru_cache(maxsize=32)
def _generate_fn(model, length, top_k, with_z):
  """The jitted `sampler` for one set of static arguments (cached: one compile per shape)."""
  return jax.jit(sampler(model, length, top_k, with_z))


def generate(
  model: MusicTransformer,
  variables,
  rng,
  *,
  num_tokens: int,
  batch_size: int = 1,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  z=None,
  prompt=None,
):
  """Autoregressive sampling with a key/value cache, jitted, one token per loop step.

  prompt: int [P] or [B, P] (default: START). z: [B, latent_dim] for VAE modes (default: a
  draw from the prior N(0, I)); must be None for mode 'transformer'.
  Returns int32 [B, P + num_tokens]: the prompt, then the sampled ids. A tokenizer's `decode`
  stops at the first END; ids after it are meaningless.
  """
  cfg = model.cfg
  prompt = np.full((1, 1), START, np.int32) if prompt is None else np.asarray(prompt, np.int32)
  prompt = np.broadcast_to(np.atleast_2d(prompt), (batch_size, np.atleast_2d(prompt).shape[1]))
  length = prompt.shape[1] + num_tokens
  if prompt.shape[1] == 0:
    raise ValueError("the prompt is empty; start it with START (id 1)")
  if length > cfg.max_len:
    raise ValueError(f"prompt + num_tokens = {length} exceeds model.max_len = {cfg.max_len}")
  rng, z_rng = jax.random.split(rng)
  if cfg.is_vae and z is None:
    z = jax.random.normal(z_rng, (batch_size, cfg.latent_dim), jnp.float32)
  if not cfg.is_vae and z is not None:
    raise ValueError("z is only meaningful for model.mode 'vae' or 'vaegan'")
  fn = _generate_fn(model, length, int(top_k), z is not None)
  z = jnp.zeros((), jnp.float32) if z is None else jnp.asarray(z, jnp.float32)
  return fn(
    variables["params"], jnp.asarray(prompt), z, rng, jnp.float32(temperature), jnp.float32(top_p)
  )


@functools.lru_cache(maxsize=8)
def _encode_fn(model):
  return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens, method="encode")[0])


def encode(model: MusicTransformer, variables, tokens):
  """Posterior means [B, latent_dim] of token windows [B, T] (for interpolation)."""
  return _encode_fn(model)(variables["params"], jnp.asarray(tokens, jnp.int32))


def sample(job, state, config, num_samples: int, seed: int, z=None) -> np.ndarray:
  """int32 [num_samples, 1 + generate.num_tokens]: START, then sampled ids (prior z in VAE
  stages unless `z` is given)."""
  g = config.generate
  return np.asarray(
    generate(
      job.model,
      {"params": state.params},
      jax.random.PRNGKey(seed),
      num_tokens=g.num_tokens,
      batch_size=num_samples,
      temperature=g.temperature,
      top_k=g.top_k,
      top_p=g.top_p,
      z=z,
    )
  )


def decode_all(tokenizer, rows) -> tuple[list, int]:
  """(each token row decoded to `pretty_midi.PrettyMIDI`, how many ids in all could not be
  decoded and were skipped: a generated sequence may break the tokenization's grammar)."""
  pieces, skipped = [], 0
  for row in rows:
    piece, n = tokenizer.decode_counted(row)
    pieces.append(piece)
    skipped += n
  return pieces, skipped


def write_midi(tokens: np.ndarray, out_dir: str, tokenizer, prefix: str = "sample") -> list[str]:
  """Each token row -> `out_dir/<prefix>_XX.mid` (decoded by the run's `tokenizer`) and its
  tokens as `.npy`; ids that do not decode are skipped, counted in the log."""
  os.makedirs(out_dir, exist_ok=True)
  pieces, skipped = decode_all(tokenizer, tokens)
  if skipped:
    logging.warning(
      "%d generated ids did not decode (%s) and were skipped", skipped, tokenizer.kind
    )
  paths = []
  for i, (seq, piece) in enumerate(zip(tokens, pieces)):
    path = os.path.join(out_dir, f"{prefix}_{i:02d}.mid")
    piece.write(path)
    np.save(path[:-4] + ".npy", np.asarray(seq, np.int32))
    paths.append(path)
  return paths
