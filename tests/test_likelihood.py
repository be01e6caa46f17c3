"""The importance-weighted likelihood against a closed form, and the latent-usage measures.

A linear-Gaussian VAE, x = W z + b + noise with variance 1/2 per feature (the likelihood the
objective's sum of squared errors implies) and z ~ N(0, I), has the marginal
N(b, W W^T + I/2) and a Gaussian posterior; with W's columns orthogonal the posterior is
diagonal, so an encoder can be exact. The IWAE estimate must then equal log p(x) for any K,
and with a wrong encoder it must sit below log p(x) and approach it as K grows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.data import normalize as normalize_lib
from jaxvae.evaluators import likelihood
from jaxvae.losses import reconstruction
from jaxvae.training import metrics
from jaxvae.training import step as step_lib

DX, DZ = 6, 3


@pytest.fixture(scope="module")
def linear_gaussian():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(DX, DZ)))
  w = (q * np.array([2.0, 1.0, 0.5])).astype(np.float64)  # orthogonal columns
  b = rng.normal(size=DX)
  cov = w @ w.T + 0.5 * np.eye(DX)
  x = rng.multivariate_normal(b, cov, size=5)
  exact = stats.multivariate_normal(b, cov).logpdf(x)
  s = 1.0 / (1.0 + 2.0 * np.diag(w.T @ w))  # posterior variances
  return {
    "x": jnp.asarray(x, jnp.float32),
    "exact": exact,
    "mean": lambda x: (x - jnp.asarray(b, jnp.float32)) @ jnp.asarray(w, jnp.float32) * 2.0 * s,
    "logvar": jnp.log(jnp.asarray(s, jnp.float32)),
    "decode": lambda z: z @ jnp.asarray(w.T, jnp.float32) + jnp.asarray(b, jnp.float32),
  }


def _estimate(lg, encode, k, seed=0):
  w = likelihood.log_weights(
    encode,
    lg["decode"],
    likelihood.standard_normal,
    lg["x"],
    jax.random.PRNGKey(seed),
    k,
    "gaussian",
    chunk=min(k, 500),
  )
  assert w.shape == (k, 5)
  return [np.asarray(v, np.float64) for v in likelihood.bounds(w)]


def test_exact_posterior_gives_the_closed_form_for_any_k(linear_gaussian):
  lg = linear_gaussian

  def encode(x):
    m = lg["mean"](x)
    return m, jnp.broadcast_to(lg["logvar"], m.shape)

  for k in (1, 7):
    iwae, elbo = _estimate(lg, encode, k)
    np.testing.assert_allclose(iwae, lg["exact"], atol=2e-4)
    np.testing.assert_allclose(elbo, lg["exact"], atol=2e-4)


def test_a_wrong_posterior_is_a_lower_bound_that_tightens_with_k(linear_gaussian):
  lg = linear_gaussian

  def encode(x):  # shifted means, inflated variances
    m = lg["mean"](x) + 0.4
    return m, jnp.broadcast_to(lg["logvar"] + 0.7, m.shape)

  iwae_1, elbo = _estimate(lg, encode, 1)
  iwae_10, _ = _estimate(lg, encode, 10)
  iwae_many, elbo_many = _estimate(lg, encode, 4000)
  gap = lg["exact"] - elbo_many
  assert np.all(gap > 0.1)  # the ELBO is well below log p(x)
  assert np.all(lg["exact"] - iwae_many < 0.05 * gap + 0.01)  # K = 4000 closes the gap
  assert np.all(iwae_many <= lg["exact"] + 0.02)
  assert np.mean(iwae_10) > np.mean(iwae_1)


def test_decoder_likelihoods_are_the_objectives_negated():
  """log p(x|z) is minus the objective's reconstruction term, plus the Gaussian's constant."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(size=(4, 3, 5)), jnp.float32)
  recon = jnp.asarray(rng.uniform(0.05, 0.95, size=(4, 3, 5)), jnp.float32)
  np.testing.assert_allclose(
    likelihood.log_likelihood(x, recon, "bernoulli"),
    -reconstruction.nll(recon, x, "bce"),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    likelihood.log_likelihood(x, recon, "gaussian"),
    -reconstruction.nll(recon, x, "mse") - 7.5 * np.log(np.pi),
    rtol=1e-5,
  )


def test_active_units_and_kl_per_dimension():
  """A dimension whose posterior mean varies over the data is active; one stuck at the
  prior (mean 0, variance 1) is not and has zero KL."""
  rng = np.random.default_rng(2)
  n = 64
  mu = np.stack([rng.normal(size=n), 0.05 * rng.normal(size=n), np.zeros(n)], 1)
  logvar = np.stack([np.full(n, -2.0), np.full(n, -0.1), np.zeros(n)], 1)
  mask = np.ones(n)
  mask[-4:] = 0  # padding rows are left out
  mu[-4:] = 100.0
  sums = jax.device_get(step_lib.latent_sums(jnp.asarray(mu), jnp.asarray(logvar), mask))
  usage = metrics.latent_usage(sums, float(mask.sum()))
  assert usage["active_units"] == 1 and usage["latent_dim"] == 3
  kl = np.asarray(usage["kl_per_dim"])
  m, lv = mu[:-4], logvar[:-4]
  np.testing.assert_allclose(kl, (0.5 * (m**2 + np.exp(lv) - 1 - lv)).mean(0), rtol=1e-5)
  assert kl[2] == pytest.approx(0.0, abs=1e-9) and kl[0] > kl[1] > 0


def test_spectral_distances_undo_the_normalization():
  """LSD and spectral convergence in feature units: a reconstruction 3 dB above the input
  everywhere is 3 dB away whatever the normalization the model saw; identical is 0."""
  import ml_collections

  from jaxvae.evaluators import reconstruction

  rng = np.random.default_rng(3)
  db = rng.uniform(-60.0, 0.0, size=(4, 8, 10))
  stats = {"mean": -30.0, "std": 12.0, "min_mean": -80.0, "max_mean": 0.0}
  stats |= {"band_mean": np.linspace(-50.0, -10.0, 8).tolist()}
  stats["band_std"] = np.linspace(4.0, 12.0, 8).tolist()
  for method in ("global", "band", "none"):
    config = ml_collections.ConfigDict(
      {"data": {"normalize": method, "scale": "db", "feature": "mel"}}
    )
    x = normalize_lib.normalize_features(db, stats, method)
    louder = normalize_lib.normalize_features(db + 3.0, stats, method)
    out = reconstruction.evaluate(x, louder, stats, config)
    assert out["lsd_db"] == pytest.approx(3.0, rel=1e-6)
    # Magnitudes 10^(3/20) times larger: the relative error is that factor minus one.
    assert out["spectral_convergence"] == pytest.approx(10 ** (3 / 20) - 1, rel=1e-6)
    assert reconstruction.evaluate(x, x, stats, config)["lsd_db"] == pytest.approx(0.0, abs=1e-9)
    assert "exact" in out["units"]
