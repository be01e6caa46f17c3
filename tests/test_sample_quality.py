"""Fréchet and kernel distances against closed forms on Gaussians, and the band embedding."""

import numpy as np
import pytest
from scipy import linalg

from jaxvae.evaluators import sample_quality as sq


def test_frechet_matches_the_closed_form():
  rng = np.random.default_rng(0)
  # Diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2.
  sa, sb = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
  ma, mb = rng.normal(size=5), rng.normal(size=5)
  want = np.sum((ma - mb) ** 2) + np.sum((sa - sb) ** 2)
  got = sq.frechet_from_moments(ma, np.diag(sa**2), mb, np.diag(sb**2))
  assert got == pytest.approx(want, rel=1e-4)
  # Full covariances: against scipy's matrix square root.
  a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
  ca, cb = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
  root = linalg.sqrtm(ca @ cb).real
  want = np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * root)
  assert sq.frechet_from_moments(ma, ca, mb, cb) == pytest.approx(want, rel=1e-3)
  # From samples: converges to the moments' distance.
  x = rng.normal(size=(20000, 2)) * [1.0, 2.0]
  y = rng.normal(size=(20000, 2)) * [1.5, 2.0] + [1.0, 0.0]
  assert sq.frechet_distance(x, y) == pytest.approx(1.0 + 0.25, abs=0.05)
  assert sq.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-3)


def test_mmd_matches_the_gaussian_closed_form():
  """For N(m, s^2 I) and N(n, t^2 I) in d dimensions and the kernel exp(-|x-y|^2 / 2h^2):
  E k = (h^2 / v)^(d/2) exp(-|m - n|^2 / 2v) with v = h^2 + s^2 + t^2."""
  rng = np.random.default_rng(1)
  d, h, n = 2, 1.5, 3000
  ma, mb, s_a, s_b = np.zeros(d), np.array([1.0, 0.5]), 1.0, 0.7

  def ek(m1, m2, s1, s2):
    v = h**2 + s1**2 + s2**2
    return (h**2 / v) ** (d / 2) * np.exp(-np.sum((m1 - m2) ** 2) / (2 * v))

  want = ek(ma, ma, s_a, s_a) + ek(mb, mb, s_b, s_b) - 2 * ek(ma, mb, s_a, s_b)
  x = ma + s_a * rng.normal(size=(n, d))
  y = mb + s_b * rng.normal(size=(n, d))
  assert sq.mmd2(x, y, h) == pytest.approx(want, abs=0.01)
  same = sq.mmd2(x[: n // 2], x[n // 2 :], h)
  assert abs(same) < 0.01  # unbiased: about 0 for one distribution
  out = sq.distances(x[:200], y[:300])
  assert out["n"] == 200 and out["n_reference"] == 300 and out["mmd_bandwidth"] > 0


def test_band_embedding_reads_level_spread_and_movement():
  rng = np.random.default_rng(2)
  db = rng.uniform(-40, -20, size=(3, 32, 20))
  e = sq.band_statistics(db, 8)
  assert e.shape == (3, 24)
  louder = sq.band_statistics(db + 10.0, 8)
  np.testing.assert_allclose(louder[:, :8], e[:, :8] + 10.0, rtol=1e-5)  # band means move
  np.testing.assert_allclose(louder[:, 8:], e[:, 8:], rtol=1e-4, atol=1e-4)  # the rest do not
  still = sq.band_statistics(np.full((1, 32, 20), -30.0), 8)
  assert np.allclose(still[:, 8:], 0.0)


def test_a_bad_embedding_setting_is_one_config_error():
  import os

  from conftest import ROOT
  from jaxvae import errors
  from jaxvae.variants import registry

  spec = os.path.join(ROOT, "configs", "conv_vae.py:small")
  with pytest.raises(errors.ConfigError, match="eval.embedding"):
    registry.load_config(spec, {"eval.embedding": "vggish"})
  config = registry.load_config(spec, {"eval.embedding": "numpy:ones_like"})
  name, fn = sq.embedding_fn(config)
  stats = {"mean": 0.0, "std": 1.0, "band_mean": [-30.0] * 4, "band_std": [10.0] * 4}
  assert name == "numpy:ones_like" and fn(np.zeros((3, 4, 5)), stats).shape == (3, 20)
  config = registry.load_config(spec, {"eval.embedding": "numpy:sum"})
  with pytest.raises(errors.ConfigError, match="returned shape"):
    sq.embedding_fn(config)[1](np.zeros((3, 4, 5)), stats)
