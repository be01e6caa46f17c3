"""VaDE (Jiang et al. 2017, "Variational Deep Embedding"): a VAE with a Gaussian-mixture prior.

    p(c) = Cat(softmax(pi_logits)),  p(z | c) = N(mu_c, diag(exp(logvar_c))),  p(x | z) = decoder.

The encoder/decoder are the fully connected `BasicVAE`; the mixture lives in the same `params`
tree (`pi_logits` [K], `mu_c` [K, L], `logvar_c` [K, L]) so one optimizer trains both
(`param_labels` lets it give the mixture its own learning rate). The mixture weights are
stored as unconstrained logits: softmax of logits is always on the simplex, whereas the seed-000
original applied softmax to weights that were already normalized (a bug, MISSION.md).

Training runs in two stages (`stages`):
  1. 'pretrain': a deterministic autoencoder (z = mu), reconstruction only;
  2. 'joint': on entry `gmm_init` fits a diagonal GaussianMixture to the latent means of the
     training set and writes it into the params, then the full ELBO (`vade_objective`).
Which stage the model is in is the `vade/posterior_noise` variable (0 or 1, a non-`params`
collection): it is part of the checkpointed state, so a resumed run samples z exactly when
the run it resumes did, and a traced scale needs no Python branch inside the jitted step.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.mixture import GaussianMixture

from jaxvae import multihost
from jaxvae.losses import vade as vade_objective
from jaxvae.config.loading import ConfigError
from jaxvae.models import vae
from jaxvae.variants.registry import Stage
from jaxvae.data.spec import DataSpec

GMM_PARAMS = ("pi_logits", "mu_c", "logvar_c")
NOISE_COLLECTION = "vade"
LOG_2PI = vade_objective.LOG_2PI


def log_joint(z: jax.Array, pi_logits: jax.Array, mu_c: jax.Array,
              logvar_c: jax.Array) -> jax.Array:
  """log p(c) + log p(z | c) for every cluster: [B, L] -> [B, K], in float32."""
  z = z.astype(jnp.float32)[:, None, :]
  log_pi = jax.nn.log_softmax(pi_logits.astype(jnp.float32))
  mu_c, logvar_c = mu_c.astype(jnp.float32), logvar_c.astype(jnp.float32)
  log_pdf = -0.5 * jnp.sum(LOG_2PI + logvar_c + jnp.square(z - mu_c) * jnp.exp(-logvar_c),
                           axis=-1)
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

  def setup(self):
    super().setup()
    k, latent = self.n_clusters, self.latent_dim
    # Placeholders until `gmm_init`: equal weights, unit variances, spread-out means.
    self.pi_logits = self.param("pi_logits", flax.linen.initializers.zeros, (k,), jnp.float32)
    self.mu_c = self.param("mu_c", flax.linen.initializers.normal(1.0), (k, latent),
                           jnp.float32)
    self.logvar_c = self.param("logvar_c", flax.linen.initializers.zeros, (k, latent),
                               jnp.float32)
    self.posterior_noise = self.variable(NOISE_COLLECTION, "posterior_noise",
                                         lambda: jnp.zeros((), jnp.float32))

  def gmm(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    return self.pi_logits, self.mu_c, self.logvar_c

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
    mu, logvar = self.encode(batch, train)
    eps = jax.random.normal(self.make_rng("sample"), mu.shape, jnp.float32)
    z = mu + self.posterior_noise.value * jnp.exp(0.5 * logvar) * eps
    log_gamma = cluster_log_posterior(z, *self.gmm())
    assignments = jnp.argmax(cluster_log_posterior(mu, *self.gmm()), axis=-1)
    return {"recon": self.decode(z, batch, train), "mu": mu, "logvar": logvar, "z": z,
            "gamma": jnp.exp(log_gamma), "log_gamma": log_gamma,
            "assignments": assignments.astype(jnp.int32), "pi_logits": self.pi_logits,
            "mu_c": self.mu_c, "logvar_c": self.logvar_c}


def validate(config) -> None:
  """Variant-specific config checks, with the key that is wrong."""
  m = config.model
  if m.n_clusters < 1:
    raise ConfigError(f"config key 'model.n_clusters' is {m.n_clusters}; expected >= 1")
  if m.pretrain_epochs < 0:
    raise ConfigError(f"config key 'model.pretrain_epochs' is {m.pretrain_epochs}; "
                      "expected >= 0")
  if m.gmm_lr_scale < 0:
    raise ConfigError(f"config key 'model.gmm_lr_scale' is {m.gmm_lr_scale}; expected >= 0")
  if config.objective.recon == "bce" and m.output_activation != "sigmoid":
    raise ConfigError("config key 'objective.recon' is 'bce', which needs outputs in (0, 1): "
                      "set model.output_activation='sigmoid'")


def build_vade(model_config, spec: DataSpec, dtype: str = "float32") -> VaDE:
  return VaDE(input_shape=spec.input_shape, hidden=tuple(model_config.hidden),
              latent_dim=model_config.latent_dim, dropout=model_config.dropout,
              n_clusters=model_config.get("n_clusters", 15),
              output_activation=model_config.get("output_activation", "none"),
              dtype=vae._dtype(dtype))  # pylint: disable=protected-access


def param_labels(params) -> Any:
  """'gmm' for the mixture parameters, 'net' for everything else (for optax.multi_transform)."""
  params = flax.core.unfreeze(params)
  return {name: jax.tree.map(lambda _, n=name: "gmm" if n in GMM_PARAMS else "net", sub)
          for name, sub in params.items()}


def lr_multipliers(params, config) -> Any:
  """Per-parameter update scales for the trainer: `model.gmm_lr_scale` on the mixture, 1 else."""
  scale = float(config.model.get("gmm_lr_scale", 1.0))
  return jax.tree.map(lambda label: scale if label == "gmm" else 1.0, param_labels(params))


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------

def encode_means(state, model: VaDE, batches) -> np.ndarray:
  """Latent means [N, L] of every real (mask 1) example that `batches()` yields, in order."""
  variables = {"params": state.params, **state.model_state}
  encode = jax.jit(lambda v, b: model.apply(v, b, train=False, method="encode")[0])
  chunks = []
  for batch in batches():
    mu, mask = multihost.to_host((encode(variables, batch), batch["mask"]))
    chunks.append(mu[mask > 0])
  return np.concatenate(chunks).astype(np.float64)


def fit_gmm(means: np.ndarray, n_clusters: int, seed: int) -> dict[str, np.ndarray]:
  """A diagonal GaussianMixture on the latent means, as `pi_logits`, `mu_c`, `logvar_c`."""
  if len(means) < n_clusters:
    raise ValueError(f"cannot fit {n_clusters} clusters (config key 'model.n_clusters') to "
                     f"{len(means)} training examples")
  gmm = GaussianMixture(n_components=n_clusters, covariance_type="diag", random_state=seed)
  gmm.fit(means)
  # log weights are valid logits: softmax(log w) = w because the weights sum to 1.
  return {"pi_logits": np.log(gmm.weights_).astype(np.float32),
          "mu_c": gmm.means_.astype(np.float32),
          "logvar_c": np.log(gmm.covariances_).astype(np.float32)}


def with_gmm(state, gmm: dict[str, np.ndarray]):
  """`state` with the mixture parameters replaced and the posterior noise switched on."""
  params = dict(flax.core.unfreeze(state.params))
  for name in GMM_PARAMS:
    if params[name].shape != gmm[name].shape:
      raise ValueError(f"GMM parameter '{name}' has shape {gmm[name].shape}, the model's is "
                       f"{params[name].shape} (check model.n_clusters / model.latent_dim)")
    params[name] = jnp.asarray(gmm[name], jnp.float32)
  model_state = dict(flax.core.unfreeze(state.model_state))
  model_state[NOISE_COLLECTION] = {"posterior_noise": jnp.ones((), jnp.float32)}
  return state.replace(params=params, model_state=model_state)


def gmm_init(state, model: VaDE, batches, config):
  """The joint stage's `on_start`: fit the mixture to the pretrained encoder's latent means.

  The GMM parameters' optimizer moments are untouched: the pretraining objective does not
  depend on them, so their Adam moments are still zero.
  """
  means = encode_means(state, model, batches)
  gmm = fit_gmm(means, model.n_clusters, config.seed)
  return with_gmm(state, gmm)


def stages(config) -> list:
  """'pretrain' (autoencoder) for `model.pretrain_epochs`, then 'joint' for `train.epochs`."""
  return [Stage("pretrain", config.model.pretrain_epochs, vade_objective.pretrain_objective),
          Stage("joint", config.train.epochs, vade_objective.vade_objective, gmm_init)]
