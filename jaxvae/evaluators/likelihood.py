"""The marginal likelihood of a Gaussian-latent VAE, importance-weighted (Burda et al.'s IWAE
bound).

    log p(x) >= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x)

The bound tightens as K grows and is exact when q is the true posterior; K = 1 is the ELBO
in expectation. The decoder likelihood is the one the model's objective implies
(`LIKELIHOODS`): the sum of squared errors is the negative log-density of a Gaussian with
variance 1/2 per normalized feature (up to the constant D/2 log pi, included here), binary
cross-entropy that of a Bernoulli per feature. The prior is N(0, I), or the model's own
(`log_prior`, VaDE's mixture). Numbers are nats per example and bits per dimension of the
normalized features the model sees; they compare between models on the same features and
the same likelihood, not across normalizations (a density over continuous features can be
negative in nats).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.data import pipeline
from jaxvae.variants import registry

LIKELIHOODS = {
  "gaussian": "Gaussian, variance 1/2 per normalized feature (objective: sum of squared errors)",
  "bernoulli": "Bernoulli per feature (objective: binary cross-entropy)",
}
LOG_2PI = math.log(2.0 * math.pi)


def log_likelihood(x: jax.Array, recon: jax.Array, kind: str) -> jax.Array:
  """log p(x | z) summed over features: examples `x` `[B, *F]` and decodings `recon` `[...,
  B, *F]` -> `[..., B]`."""
  axes = tuple(range(-(x.ndim - 1), 0))
  x = x.astype(jnp.float32)
  recon = recon.astype(jnp.float32)
  if kind == "bernoulli":
    p = jnp.clip(recon, 1e-6, 1.0 - 1e-6)
    return jnp.sum(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p), axis=axes)
  if kind != "gaussian":
    raise ValueError(f"likelihood {kind!r}; expected one of {', '.join(LIKELIHOODS)}")
  d = math.prod(x.shape[1:])
  return -jnp.sum(jnp.square(recon - x), axis=axes) - 0.5 * d * math.log(math.pi)


def log_normal(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mu, diag(exp(logvar))) summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar), axis=-1)


def standard_normal(z: jax.Array) -> jax.Array:
  return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def log_weights(
  encode: Callable,
  decode: Callable,
  log_prior: Callable,
  x: jax.Array,
  key: jax.Array,
  num_samples: int,
  kind: str,
  chunk: int = 16,
) -> jax.Array:
  """`[K, B]` log importance weights log p(x|z) + log p(z) - log q(z|x) of `num_samples`
  posterior draws per example. `encode(x) -> (mu, logvar)` `[B, D]`; `decode(z [B, D]) ->
  recon` shaped like `x`; `log_prior(z [..., D]) -> [...]`. Draws go through the decoder
  `chunk` at a time (memory: chunk x B decodings)."""
  mu, logvar = encode(x)
  mu, logvar = mu.astype(jnp.float32), logvar.astype(jnp.float32)
  chunk = max(1, min(chunk, num_samples))
  n_chunks = -(-num_samples // chunk)

  def one_chunk(k):
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, (chunk, *mu.shape), jnp.float32)
    recon = jax.vmap(decode)(z)
    return log_likelihood(x, recon, kind) + log_prior(z) - log_normal(z, mu[None], logvar[None])

  w = jax.lax.map(one_chunk, jax.random.split(key, n_chunks))  # [n_chunks, chunk, B]
  return w.reshape(n_chunks * chunk, -1)[:num_samples]


def bounds(w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(IWAE bound, mean ELBO) `[B]` each from log weights `[K, B]`."""
  k = w.shape[0]
  return jax.nn.logsumexp(w, axis=0) - math.log(k), jnp.mean(w, axis=0)


class Likelihood:
  """`run(state)` -> the IWAE estimate of -log p(x) over the validation split (with
  `eval.iw_samples` draws per example) and its conditions, or why the model has none."""

  def __init__(self, job):
    self.job = job

  def kind(self) -> str | None:
    return registry.get(self.job.config.model.name).likelihood(self.job.config)

  def run(self, state, examples=None) -> dict:
    job, config = self.job, self.job.config
    kind = self.kind()
    if kind is None:
      return {
        "available": False,
        "reason": f"model '{config.model.name}' has no normalized decoder likelihood "
        "(its objective is not one)",
      }
    examples = job.val_examples if examples is None else examples
    k = int(config.eval.iw_samples)
    mixture = job.variant.latent_kind(config) == "mixture"
    fn = _iwae_fn(job.model, kind, k, int(config.eval.iw_chunk), mixture)
    variables = {"params": state.params, **state.model_state}
    key = jax.random.PRNGKey(config.seed)
    iwae, elbo = [], []
    for i, batch in enumerate(pipeline.eval_batches(examples, config.train.batch_size)):
      real = batch["mask"] > 0
      a, b = fn(variables, job.put(batch), jax.random.fold_in(key, i))
      iwae.append(np.asarray(a)[real])
      elbo.append(np.asarray(b)[real])
    iwae, elbo = np.concatenate(iwae), np.concatenate(elbo)
    dims = int(np.prod(job.store.shape))
    nll = float(-iwae.mean())
    return {
      "available": True,
      "iw_samples": k,
      "likelihood": LIKELIHOODS[kind],
      "prior": "the model's mixture" if mixture else "N(0, I)",
      "conditioned_on": job.config.model.get("cond_label", "") or None,
      "split": "validation",
      "examples": int(len(iwae)),
      "nll_nats": nll,
      "nll_bits_per_dim": nll / (dims * math.log(2.0)),
      "elbo_nats": float(elbo.mean()),
      "iwae_gap_nats": float((iwae - elbo).mean()),
      "dims": dims,
    }


@functools.lru_cache(maxsize=8)
def _iwae_fn(model, kind: str, num_samples: int, chunk: int, mixture: bool):
  """The jitted (variables, batch, key) -> (IWAE bound, ELBO) `[B]` of a Linen model with
  `encode(batch, train)` and `decode(z, batch, train)`."""

  def fn(variables, batch, key):
    x = batch["x"]

    def encode(_):
      return model.apply(variables, batch, False, method=model.encode)

    def decode(z):
      out = model.apply(variables, z, batch, False, method=model.decode)
      return out.reshape(x.shape)

    if mixture:  # the prior is the model's learned mixture (`log_prior`)

      def prior(z):
        return model.apply(variables, z, method=model.log_prior)
    else:
      prior = standard_normal
    return bounds(log_weights(encode, decode, prior, x, key, num_samples, kind, chunk))

  return jax.jit(fn)
