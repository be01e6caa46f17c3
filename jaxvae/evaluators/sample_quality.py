"""How close generated spectrograms are to real ones: the Fréchet distance and the kernel
(MMD) distance between the two sets in an embedding, computed in JAX, for samples from the
model's prior (N(0, I); VaDE: its mixture) and from a Gaussian mixture fitted to the
training posteriors (the post-hoc prior, `sampling.prior.fit_posterior_gmm`), against the
validation clips; the validation clips' reconstructions give the floor a perfect sampler of
this model would reach.

Embeddings (`eval.embedding`):
- 'bands' (default, built in, deterministic): the mel power in dB (normalization undone)
  pooled into `eval.embedding_bands` bands, and per band its mean over time, its standard
  deviation over time and the mean absolute frame-to-frame change: 3 x bands numbers that
  describe timbre, dynamics and movement, like the statistics FAD-style embeddings summarize.
- 'module:function': a user function of mel power in dB `[B, n_mels, frames]` -> `[B, E]`
  (numpy in, numpy out).

The Fréchet distance is that of Gaussians fitted to the two embedded sets (FAD's formula):
|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2). The kernel distance is the
unbiased MMD^2 with a Gaussian kernel whose bandwidth is the median pairwise distance of the
reference set (one kernel for every model and sampler measured against it). Both depend on
the embedding and on the number of samples: every number here names its embedding and its
sample counts, and compares only with numbers that share them.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import errors
from jaxvae.sampling import prior

# ----------------------------------------------------------------------------- distances


def frechet_from_moments(mu_a, cov_a, mu_b, cov_b) -> float:
  """The Fréchet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
  mu_a, mu_b = jnp.asarray(mu_a, jnp.float32), jnp.asarray(mu_b, jnp.float32)
  cov_a, cov_b = jnp.asarray(cov_a, jnp.float32), jnp.asarray(cov_b, jnp.float32)
  return float(_frechet(mu_a, cov_a, mu_b, cov_b))


@jax.jit
def _frechet(mu_a, cov_a, mu_b, cov_b):
  w, v = jnp.linalg.eigh(cov_a)
  root_a = (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T
  middle = root_a @ cov_b @ root_a
  middle = 0.5 * (middle + middle.T)
  trace_root = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(middle), 0.0)))
  return jnp.sum(jnp.square(mu_a - mu_b)) + jnp.trace(cov_a) + jnp.trace(cov_b) - 2 * trace_root


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to the rows of `a` and of `b` `[N, E]`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return frechet_from_moments(
    a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
  )


def median_bandwidth(reference: np.ndarray) -> float:
  """The median pairwise Euclidean distance of the reference rows (at least 1e-6): one
  kernel for every set measured against the same reference."""
  x = jnp.asarray(reference, jnp.float32)
  d = jnp.sqrt(jnp.maximum(_sq_dists(x, x), 0.0))
  upper = d[jnp.triu_indices(len(x), 1)]
  return max(float(jnp.median(upper)), 1e-6)


def _sq_dists(x, y):
  return jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None, :] - 2.0 * x @ y.T


def mmd2(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
  """Unbiased MMD^2 between the rows of `a` `[N, E]` and `b` `[M, E]` (N, M >= 2) with the
  kernel exp(-|x - y|^2 / (2 bandwidth^2))."""
  return float(
    _mmd2(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.float32(bandwidth))
  )


@jax.jit
def _mmd2(a, b, bandwidth):
  def k(x, y):
    return jnp.exp(-jnp.maximum(_sq_dists(x, y), 0.0) / (2.0 * bandwidth**2))

  n, m = a.shape[0], b.shape[0]
  kaa = (jnp.sum(k(a, a)) - n) / (n * (n - 1))
  kbb = (jnp.sum(k(b, b)) - m) / (m * (m - 1))
  return kaa + kbb - 2.0 * jnp.mean(k(a, b))


def distances(a: np.ndarray, b: np.ndarray) -> dict:
  """Fréchet and kernel distance of generated `a` to reference `b` (embedded rows)."""
  bandwidth = median_bandwidth(b)
  return {
    "frechet": frechet_distance(a, b),
    "mmd2": mmd2(a, b, bandwidth),
    "mmd_bandwidth": bandwidth,
    "n": int(len(a)),
    "n_reference": int(len(b)),
  }


# ----------------------------------------------------------------------------- embeddings


def band_statistics(db: np.ndarray, bands: int) -> np.ndarray:
  """`[B, n_mels, frames]` dB -> `[B, 3 x bands]`: per pooled band the mean over time, the
  standard deviation over time and the mean absolute frame-to-frame change."""
  x = jnp.asarray(db, jnp.float32)
  n_mels = x.shape[1]
  bands = min(bands, n_mels)
  edges = np.linspace(0, n_mels, bands + 1).round().astype(int)
  pooled = jnp.stack([x[:, a:b].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)
  delta = (
    jnp.abs(jnp.diff(pooled, axis=-1)).mean(-1) if pooled.shape[-1] > 1 else pooled[..., 0] * 0
  )
  return np.asarray(jnp.concatenate([pooled.mean(-1), pooled.std(-1), delta], 1))


def embedding_fn(config):
  """(name, function of normalized features -> `[B, E]`) for `eval.embedding`."""
  spec = str(config.eval.embedding)
  if spec == "bands":
    bands = int(config.eval.embedding_bands)

    def fn(x, stats):
      return band_statistics(_db(x, stats, config), bands)

    return f"bands{bands} (log-mel band mean, std, mean |delta| over time)", fn
  module_name, sep, attr = spec.partition(":")
  if not sep:
    raise errors.ConfigError(
      f"config key 'eval.embedding' is {spec!r}; expected 'bands' or 'module:function'"
    )
  try:
    user = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise errors.ConfigError(f"config key 'eval.embedding' is {spec!r}: {e}") from None

  def fn(x, stats):
    db = _db(x, stats, config)  # ours: its errors are not the user's function's
    try:
      out = np.asarray(user(db), np.float32)
    except Exception as e:  # noqa: BLE001 - the user's function: one line, not its traceback
      raise errors.ConfigError(
        f"config key 'eval.embedding' is {spec!r}, which raised {type(e).__name__}: {e}"
      ) from None
    if out.ndim < 1 or len(out) != len(x):
      raise errors.ConfigError(
        f"config key 'eval.embedding' is {spec!r}, which returned shape {list(out.shape)} "
        f"for {len(x)} spectrograms; expected [{len(x)}, E]"
      )
    return out.reshape(len(x), -1)

  return spec, fn


def _db(x, stats, config) -> np.ndarray:
  """Normalized mel features -> mel power in dB (10 log10, floor 1e-10)."""
  return 10.0 * np.log10(np.maximum(prior.to_power(x, stats, config), 1e-10))


# ----------------------------------------------------------------------------- the evaluator


class SampleQuality:
  """`run(state)` -> distances of prior samples, post-hoc GMM-prior samples and validation
  reconstructions to the validation clips, in the configured embedding."""

  def __init__(self, job):
    self.job = job

  def run(self, state, val_x: np.ndarray, val_recon: np.ndarray, train_means=None) -> dict:
    """`train_means`: the training clips' posterior means, when the caller has encoded them
    (the GMM prior is fitted to them; else they are encoded here)."""
    job, config = self.job, self.job.config
    if config.data.feature != "mel":
      return {"available": False, "reason": f"features are {config.data.feature}, not mel"}
    stats = job.store.manifest["stats"]
    name, embed = embedding_fn(config)
    n = int(config.eval.num_samples)
    reference = embed(val_x, stats)
    if len(reference) < 2:
      return {"available": False, "reason": "fewer than 2 validation clips"}
    out = {"available": True, "embedding": name, "reference": "validation clips"}
    samples = prior.sample(job, state, config, None, n, config.seed)
    mixture = job.variant.latent_kind(config) == "mixture"
    own = "the model's mixture" if mixture else "N(0, I)"
    out["prior"] = distances(embed(samples, stats), reference) | {"prior": own}
    gmm = prior.fit_posterior_gmm(
      job, state, int(config.eval.gmm_components), config.seed, means=train_means
    )
    samples = prior.sample(job, state, config, None, n, config.seed, gmm=gmm)
    out["prior_gmm"] = distances(embed(samples, stats), reference) | {
      "components": int(gmm.n_components)
    }
    out["reconstructions"] = distances(embed(val_recon, stats), reference)
    out["note"] = (
      "Fréchet and MMD^2 depend on the embedding and on the sample counts: compare only "
      "numbers that share both; 'reconstructions' is this model's floor"
    )
    return out
