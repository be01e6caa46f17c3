"""VaDE (Jiang et al. 2017) as a variant: two stages, the GMM fit between them, the objectives.

Training runs in two stages (`stages`):
  1. 'pretrain': a deterministic autoencoder (z = mu), reconstruction only;
  2. 'joint': on entry `gmm_init` fits a diagonal GaussianMixture to the latent means of the
     training set and writes it into the params, then the full negative ELBO (`objective`,
     with the KL of `jaxvae.losses.clustering`). With `model.gmm_start='tsne_inputs'` the
     clusters come from a t-SNE of the inputs instead, and only their moments from the
     latent (`initial_mixture`: `tsne_clusters`, `mixture_from_clusters`).
The mixture can have its own learning rate (`model.gmm_lr_scale`, `lr_multipliers`).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import multihost
from jaxvae.errors import ConfigError
from jaxvae.losses import clustering
from jaxvae.losses import reduce
from jaxvae.models import vade as vade_model
from jaxvae.variants import audio_vae
from jaxvae.variants.base import Stage
from jaxvae.variants.base import Variant

# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


def pretrain_objective(outputs, batch, *, kl_weight, config):
  """Autoencoder pretraining: reconstruction only (the model's z is its mean in this stage)."""
  del kl_weight
  recon, mse = audio_vae.recon_terms(outputs, batch, config)
  return recon, {"loss": recon, "recon": recon, "recon_mse": mse}


def objective(outputs, batch, *, kl_weight, config):
  """Negative ELBO of VaDE with the KL part weighted by `kl_weight`."""
  recon, mse = audio_vae.recon_terms(outputs, batch, config)
  kl_per_example, entropy = clustering.vade_kl(
    outputs["mu"],
    outputs["logvar"],
    outputs["gamma"],
    outputs["log_gamma"],
    outputs["pi_logits"],
    outputs["mu_c"],
    outputs["logvar_c"],
  )
  kl = reduce.masked_mean(kl_per_example, batch["mask"])
  loss = recon + kl_weight * kl
  return loss, {
    "loss": loss,
    "recon": recon,
    "kl": kl,
    "entropy": reduce.masked_mean(entropy, batch["mask"]),
    "recon_mse": mse,
    "kl_weight": jnp.asarray(kl_weight, jnp.float32),
  }


# ---------------------------------------------------------------------------------------------
# Config checks and per-parameter learning rates
# ---------------------------------------------------------------------------------------------


def validate(config) -> None:
  """Variant-specific config checks, with the key that is wrong."""
  m = config.model
  if m.n_clusters < 1:
    raise ConfigError(f"config key 'model.n_clusters' is {m.n_clusters}; expected >= 1")
  if m.pretrain_epochs < 0:
    raise ConfigError(f"config key 'model.pretrain_epochs' is {m.pretrain_epochs}; expected >= 0")
  noise = m.get("pretrain_noise", 0.0)
  if not 0.0 <= noise < 1.0:
    raise ConfigError(f"config key 'model.pretrain_noise' is {noise}; expected 0 <= p < 1")
  start = m.get("gmm_start", "latent")
  if start not in GMM_STARTS:
    raise ConfigError(f"config key 'model.gmm_start' is {start!r}; expected one of {GMM_STARTS}")
  if m.gmm_lr_scale < 0:
    raise ConfigError(f"config key 'model.gmm_lr_scale' is {m.gmm_lr_scale}; expected >= 0")
  if config.objective.recon == "bce" and m.output_activation != "sigmoid":
    raise ConfigError(
      "config key 'objective.recon' is 'bce', which needs outputs in (0, 1): "
      "set model.output_activation='sigmoid'"
    )


def lr_multipliers(params, config) -> Any:
  """Per-parameter update scales for the trainer: `model.gmm_lr_scale` on the mixture, 1 else."""
  scale = float(config.model.get("gmm_lr_scale", 1.0))
  return jax.tree.map(
    lambda label: scale if label == "gmm" else 1.0, vade_model.param_labels(params)
  )


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def encode_means(state, model: vade_model.VaDE, batches, with_inputs: bool = False):
  """Latent means [N, L] of every real (mask 1) example that `batches()` yields, in order;
  with `with_inputs`, also those examples' inputs flattened to [N, D]."""
  variables = {"params": state.params, **state.model_state}
  encode = jax.jit(lambda v, b: model.apply(v, b, train=False, method="encode")[0])
  chunks, inputs = [], []
  for batch in batches():
    wanted = {"mu": encode(variables, batch), "mask": batch["mask"]}
    if with_inputs:
      wanted["x"] = batch["x"]
    got = multihost.to_host(wanted)  # one transfer per batch
    real = got["mask"] > 0
    chunks.append(got["mu"][real])
    if with_inputs:
      inputs.append(got["x"][real].reshape(int(real.sum()), -1))
  means = np.concatenate(chunks).astype(np.float64)
  if with_inputs:
    return means, np.concatenate(inputs).astype(np.float32, copy=False)
  return means


def _check_count(n: int, n_clusters: int) -> None:
  if n < n_clusters:
    raise ValueError(
      f"cannot fit {n_clusters} clusters (config key 'model.n_clusters') to {n} training examples"
    )


def fit_gmm(means: np.ndarray, n_clusters: int, seed: int) -> dict[str, np.ndarray]:
  """A diagonal GaussianMixture on the latent means (best of 10 restarts by likelihood), as
  `pi_logits`, `mu_c`, `logvar_c`."""
  from sklearn.mixture import GaussianMixture  # lazy: ~1.3 s, needed at the stage switch only

  _check_count(len(means), n_clusters)
  # The best of 10 k-means-initialized fits by likelihood (label-free): one fit's local
  # optimum decides VaDE's clusters, and a poor one is rarely left in joint training.
  # Fitted to the standardized means and mapped back: a diagonal mixture is the same model
  # in either coordinates, but its k-means start weighs dimensions by their spread. On
  # digits this lifted the 10-seed median accuracy from 0.811 to 0.821 (BUILD_NOTES.md).
  center, scale = standardization(means)
  gmm = GaussianMixture(
    n_components=n_clusters, covariance_type="diag", n_init=10, random_state=seed
  )
  gmm.fit((means - center) / scale)
  # log weights are valid logits: softmax(log w) = w because the weights sum to 1.
  # sklearn's variance floor (reg_covar) acted in standardized units: keep it in latent units.
  logvar = np.log(gmm.covariances_) + 2 * np.log(scale)
  return {
    "pi_logits": np.log(gmm.weights_).astype(np.float32),
    "mu_c": (gmm.means_ * scale + center).astype(np.float32),
    "logvar_c": np.maximum(logvar, np.log(VARIANCE_FLOOR)).astype(np.float32),
  }


def tsne_clusters(inputs: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
  """Cluster labels [N] of the inputs [N, D]: a full-covariance GaussianMixture (best of 10)
  on a 2-D t-SNE of them, after PCA to 50 dimensions when D is larger (the usual t-SNE
  recipe). The clusters of the data's local manifold, as N2D (McConville et al. 2020) finds
  them in an autoencoder's embedding; on scikit-learn's digits the pixels' manifold
  clusters better (accuracy 0.95) than the pretrained latent's (0.84), BUILD_NOTES.md."""
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE
  from sklearn.mixture import GaussianMixture

  _check_count(len(inputs), n_clusters)
  points = inputs.reshape(len(inputs), -1).astype(np.float32, copy=False)
  dims = min(50, len(points))
  if points.shape[1] > dims:
    points = PCA(dims, random_state=seed).fit_transform(points)
  perplexity = min(30.0, (len(points) - 1) / 3)
  init = "pca" if points.shape[1] >= 2 else "random"  # PCA init needs 2 input dimensions
  tsne = TSNE(2, init=init, perplexity=perplexity, random_state=seed)
  embedded = tsne.fit_transform(points)
  gmm = GaussianMixture(n_clusters, covariance_type="full", n_init=10, random_state=seed)
  return gmm.fit(embedded).predict(embedded)


def mixture_from_clusters(
  means: np.ndarray, labels: np.ndarray, n_clusters: int
) -> dict[str, np.ndarray]:
  """A diagonal mixture in the latent from given clusters: each cluster's share, mean and
  per-dimension variance of the latent means [N, L] (floored at VARIANCE_FLOOR). A cluster
  with no member keeps a negligible weight, the overall mean and variance."""
  overall_mean, overall_var = means.mean(0), means.var(0)
  weights, mu, var = [], [], []
  for c in range(n_clusters):
    group = means[labels == c]
    weights.append(len(group) if len(group) else 1e-6)
    mu.append(group.mean(0) if len(group) else overall_mean)
    var.append(group.var(0) if len(group) > 1 else overall_var)
  weights = np.asarray(weights, np.float64)
  return {
    "pi_logits": np.log(weights / weights.sum()).astype(np.float32),
    "mu_c": np.stack(mu).astype(np.float32),
    "logvar_c": np.log(np.maximum(np.stack(var), VARIANCE_FLOOR)).astype(np.float32),
  }


GMM_STARTS = ("latent", "tsne_inputs")
VARIANCE_FLOOR = 1e-6  # sklearn GaussianMixture's reg_covar, in latent units
DEAD_SCALE = 1e-3  # a dimension whose means spread less than this is not scaled up


def standardization(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension center and scale of [N, L] means. A (nearly) constant dimension keeps
  scale 1: scaled to unit variance, its float noise would weigh as much as a used one."""
  scale = means.std(axis=0)
  return means.mean(axis=0), np.where(scale > DEAD_SCALE, scale, 1.0)


def with_gmm(state, gmm: dict[str, np.ndarray]):
  """`state` with the mixture parameters replaced and the posterior noise switched on."""
  params = dict(flax.core.unfreeze(state.params))
  for name in vade_model.GMM_PARAMS:
    if params[name].shape != gmm[name].shape:
      raise ValueError(
        f"GMM parameter '{name}' has shape {gmm[name].shape}, the model's is "
        f"{params[name].shape} (check model.n_clusters / model.latent_dim)"
      )
    params[name] = jnp.asarray(gmm[name], jnp.float32)
  model_state = dict(flax.core.unfreeze(state.model_state))
  model_state[vade_model.NOISE_COLLECTION] = {"posterior_noise": jnp.ones((), jnp.float32)}
  return state.replace(params=params, model_state=model_state)


def initial_mixture(state, model: vade_model.VaDE, batches, config):
  """(mixture, clusters): the GMM fitted to the pretrained encoder's latent means ('latent',
  the paper's start; clusters None), or each cluster's moments in the latent with the
  clusters of a t-SNE of the inputs ('tsne_inputs'), as `model.gmm_start` says. Process 0's
  result on every process."""
  labels = None
  if config.model.get("gmm_start", "latent") == "tsne_inputs":
    means, inputs = encode_means(state, model, batches, with_inputs=True)
    labels = tsne_clusters(inputs, model.n_clusters, config.seed)
    gmm = mixture_from_clusters(means, labels, model.n_clusters)
  else:
    gmm = fit_gmm(encode_means(state, model, batches), model.n_clusters, config.seed)
  return multihost.from_main((gmm, labels))


def gmm_init(state, model: vade_model.VaDE, batches, config):
  """The joint stage's `on_start`: the `initial_mixture` written into the params.

  The GMM parameters' optimizer moments are untouched: the pretraining objective does not
  depend on them, so their Adam moments are still zero.
  """
  gmm, _ = initial_mixture(state, model, batches, config)
  return with_gmm(state, gmm)


def stages(config) -> list[Stage]:
  """'pretrain' (autoencoder) for `model.pretrain_epochs`, then 'joint' for `train.epochs`."""
  return [
    Stage("pretrain", config.model.pretrain_epochs, pretrain_objective),
    Stage("joint", config.train.epochs, objective, gmm_init),
  ]


VARIANT = Variant(
  vade_model.build_vade,
  objective,
  validate=validate,
  stages=stages,
  lr_multipliers=lr_multipliers,
  likelihood=audio_vae.recon_likelihood,
  latent=lambda config: "mixture",
)
