"""Token-level terms of the sequence models: next-token NLL and accuracy over counted targets.

Targets are `tokens[:, 1:]` (the model's logits are already shifted, see
`jaxvae.models.transformer`); target positions holding `midi.PAD` and examples with mask 0
are left out. Means are over the counted target tokens of the batch, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvae.losses import reduce
from jaxvae.symbolic.midi import PAD


def target_weights(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """float32 [B, T-1]: 1 where a target token is counted (not PAD, in a real example)."""
  return (tokens[:, 1:] != PAD).astype(jnp.float32) * mask.astype(jnp.float32)[:, None]


def token_terms(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Mean NLL (nats per token) and accuracy over counted targets, and the mean number of
  counted targets per real example (at least 1) that turns a per-window value per token."""
  targets = tokens[:, 1:]
  weights = target_weights(tokens, mask)
  logits = logits.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  examples = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)
  return {
    "nll": reduce.masked_mean(nll, weights),
    "accuracy": reduce.masked_mean(correct, weights),
    "tokens_per_example": jnp.maximum(jnp.sum(weights) / examples, 1.0),
  }
