"""VaDE (Jiang et al. 2017, "Variational Deep Embedding"): a VAE with a Gaussian-mixture prior.

    p(c) = Cat(softmax(pi_logits)),  p(z | c) = N(mu_c, diag(exp(logvar_c))),  p(x | z) = decoder.

The encoder/decoder are the fully connected `BasicVAE`; the mixture lives in the same `params`
tree (`pi_logits` [K], `mu_c` [K, L], `logvar_c` [K, L]) so one optimizer trains both
(`param_labels` lets it give the mixture its own learning rate). The mixture weights are
stored as unconstrained logits: softmax of logits is always on the simplex, whereas the original
original applied softmax to weights that were already normalized (a bug, MISSION.md).

Training runs in two stages (`jaxvae.variants.vade`): a deterministic autoencoder (z = mu),
then the full ELBO after a GaussianMixture fitted to the latent means is written into the
params. Which stage the model is in is the `vade/posterior_noise` variable (0 or 1, a
non-`params` collection): it is part of the checkpointed state, so a resumed run samples z
exactly when the run it resumes did, and a traced scale needs no Python branch inside the
jitted step.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxvae.data.spec import DataSpec
from jaxvae.models import layers
from jaxvae.models import vae

GMM_PARAMS = ("pi_logits", "mu_c", "logvar_c")
NOISE_COLLECTION = "vade"
LOG_2PI = math.log(2.0 * math.pi)


def log_joint(
  z: jax.Array, pi_logits: jax.Array, mu_c: jax.Array, logvar_c: jax.Array
) -> jax.Array:
  """log p(c) + log p(z | c) for every cluster: [B, L] -> [B, K], in float32."""
  z = z.astype(jnp.float32)[:, None, :]
  log_pi = jax.nn.log_softmax(pi_logits.astype(jnp.float32))
  mu_c, logvar_c = mu_c.astype(jnp.float32), logvar_c.astype(jnp.float32)
  log_pdf = -0.5 * jnp.sum(LOG_2PI + logvar_c + jnp.square(z - mu_c) * jnp.exp(-logvar_c), axis=-1)
  return log_pi + log_pdf


def cluster_log_posterior(z, pi_logits, mu_c, logvar_c) -> jax.Array:
  """log p(c | z) [B, K], normalized with log-sum-exp (the densities underflow otherwise)."""
  return jax.nn.log_softmax(log_joint(z, pi_logits, mu_c, logvar_c), axis=-1)


class VaDE(vae.BasicVAE):
  """`BasicVAE` (FC, BN, ReLU, dropout) plus the mixture prior's parameters.

  Outputs (besides `recon`, `mu`, `logvar`, `z`): `gamma` = q(c | x) ~= p(c | z) [B, K] and its
  log `log_gamma`, both from the sampled z as in the paper; `assignments` = argmax_c p(c | mu)
  (deterministic, for evaluation); and the mixture parameters themselves, which the objective
  needs (`pi_logits`, `mu_c`, `logvar_c`).
  """

  n_clusters: int = 15
  # The autoencoder pretraining as a denoising one (the paper pretrains a stacked denoising
  # autoencoder): this fraction of each training input is zeroed, the clean input is the
  # target. Only while the posterior noise is off (the pretraining stage) and in training.
  pretrain_noise: float = 0.0

  def setup(self):
    super().setup()
    k, latent = self.n_clusters, self.latent_dim
    # Placeholders until the joint stage's GMM fit: equal weights, unit variances, spread-out means.
    self.pi_logits = self.param("pi_logits", flax.linen.initializers.zeros, (k,), jnp.float32)
    self.mu_c = self.param("mu_c", flax.linen.initializers.normal(1.0), (k, latent), jnp.float32)
    self.logvar_c = self.param("logvar_c", flax.linen.initializers.zeros, (k, latent), jnp.float32)
    self.posterior_noise = self.variable(
      NOISE_COLLECTION, "posterior_noise", lambda: jnp.zeros((), jnp.float32)
    )

  def gmm(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    return self.pi_logits, self.mu_c, self.logvar_c

  def log_prior(self, z: jax.Array) -> jax.Array:
    """log p(z) under the mixture, `[..., L]` -> `[...]` (the IWAE estimate's prior)."""
    flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    return jax.nn.logsumexp(log_joint(flat, *self.gmm()), axis=-1).reshape(z.shape[:-1])

  def sample_prior(self, n: int, cluster: int | None = None) -> jax.Array:
    """z ~ p(z) = sum_c pi_c N(mu_c, var_c) [n, L], or from one cluster's Gaussian.

    VaDE's prior is the mixture, not N(0, I): generation should decode these latents.
    """
    key_c, key_z = jax.random.split(self.make_rng("sample"))
    if cluster is None:
      c = jax.random.categorical(key_c, self.pi_logits, shape=(n,))
    else:
      c = jnp.full((n,), cluster, jnp.int32)
    eps = jax.random.normal(key_z, (n, self.latent_dim), jnp.float32)
    return self.mu_c[c] + jnp.exp(0.5 * self.logvar_c[c]) * eps

  def __call__(self, batch, train: bool = False):
    inputs = batch
    if train and self.pretrain_noise > 0:
      x = batch["x"]
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.pretrain_noise, x.shape)
      pretraining = self.posterior_noise.value == 0
      inputs = dict(batch, x=jnp.where(pretraining & ~keep, jnp.zeros_like(x), x))
    mu, logvar = self.encode(inputs, train)
    z = layers.reparameterize(self, mu, logvar, scale=self.posterior_noise.value)
    log_gamma = cluster_log_posterior(z, *self.gmm())
    assignments = jnp.argmax(cluster_log_posterior(mu, *self.gmm()), axis=-1)
    return {
      "recon": self.decode(z, batch, train),
      "mu": mu,
      "logvar": logvar,
      "z": z,
      "gamma": jnp.exp(log_gamma),
      "log_gamma": log_gamma,
      "assignments": assignments.astype(jnp.int32),
      "pi_logits": self.pi_logits,
      "mu_c": self.mu_c,
      "logvar_c": self.logvar_c,
    }


def build_vade(model_config, spec: DataSpec, dtype: str = "float32") -> VaDE:
  return VaDE(
    input_shape=spec.input_shape,
    hidden=tuple(model_config.hidden),
    latent_dim=model_config.latent_dim,
    dropout=model_config.dropout,
    n_clusters=model_config.get("n_clusters", 15),
    pretrain_noise=float(model_config.get("pretrain_noise", 0.0)),
    output_activation=model_config.get("output_activation", "none"),
    dtype=layers.compute_dtype(dtype),
  )


def param_labels(params) -> Any:
  """'gmm' for the mixture parameters, 'net' for everything else (for optax.multi_transform)."""
  params = flax.core.unfreeze(params)
  return {
    name: jax.tree.map(lambda _, n=name: "gmm" if n in GMM_PARAMS else "net", sub)
    for name, sub in params.items()
  }
