"""VaDE's KL to a Gaussian-mixture prior (Jiang et al. 2017), per example.

The generative model is p(c) p(z | c) p(x | z) with p(z | c) = N(mu_c, diag(var_c)); the
variational posterior is q(z, c | x) = q(z | x) q(c | x), with q(z | x) = N(mu, diag(var)) from
the encoder and q(c | x) = gamma ~= p(c | z) at a sample z (the paper's eq. 13). The KL part of
the negative ELBO is

    KL = sum_c gamma_c * 0.5 * sum_l (log 2pi + logvar_c + var / var_c + (mu - mu_c)^2 / var_c)
       - sum_c gamma_c log pi_c                        (cross entropy of p(c))
       + sum_c gamma_c log gamma_c                     (minus the entropy of q(c | x))
       - 0.5 * sum_l (log 2pi + 1 + logvar)            (minus the entropy of q(z | x)).

The two log 2pi terms cancel (the paper's eq. 16 omits both); both are kept here so that the
KL is the real, non-negative divergence. `gamma` is a function of the sampled z and gradients
flow through it, as in the paper and its reference code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def cluster_cross_entropy(mu, logvar, mu_c, logvar_c) -> jax.Array:
  """E_{q(z|x)}[-log p(z | c)] for every cluster: [B, L] x [K, L] -> [B, K]."""
  mu, logvar = mu[:, None, :], logvar[:, None, :]
  return 0.5 * jnp.sum(
    LOG_2PI + logvar_c + jnp.exp(logvar - logvar_c) + jnp.square(mu - mu_c) * jnp.exp(-logvar_c),
    axis=-1,
  )


def vade_kl(mu, logvar, gamma, log_gamma, pi_logits, mu_c, logvar_c) -> tuple[jax.Array, jax.Array]:
  """Per-example KL(q(z, c | x) || p(z, c)) [B] and entropy of q(c | x) [B], in float32.

  mu, logvar [B, L]: q(z | x); gamma, log_gamma [B, K]: q(c | x); pi_logits [K], mu_c and
  logvar_c [K, L]: the mixture prior.
  """
  f32 = lambda a: a.astype(jnp.float32)
  mu, logvar, gamma, log_gamma = f32(mu), f32(logvar), f32(gamma), f32(log_gamma)
  log_pi = jax.nn.log_softmax(f32(pi_logits))
  cross_z = jnp.sum(gamma * cluster_cross_entropy(mu, logvar, f32(mu_c), f32(logvar_c)), -1)
  cross_c = -jnp.sum(gamma * log_pi, -1)
  entropy_c = -jnp.sum(gamma * log_gamma, -1)
  entropy_z = 0.5 * jnp.sum(LOG_2PI + 1.0 + logvar, -1)
  return cross_z + cross_c - entropy_c - entropy_z, entropy_c
