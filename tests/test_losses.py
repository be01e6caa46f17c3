"""Loss terms (the shared reductions, seed 002's spectral terms, the free-bits KL) and seed 002's
objective, on inputs whose answers are known by hand or by a numpy reference."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvae import errors
from jaxvae.losses import divergence
from jaxvae.losses import reconstruction
from jaxvae.losses import reduce
from jaxvae.variants import spectral

# One compile per shape instead of one per primitive: keeps this file fast on 2 cores.
_spectral = jax.jit(reconstruction.spectral_loss, static_argnums=(2, 3))


# ----------------------------------------------------------------------------------------------
# reduce
# ----------------------------------------------------------------------------------------------


def test_masked_mean_over_examples_and_over_tokens():
  values = jnp.array([1.0, 3.0, 100.0])
  np.testing.assert_allclose(reduce.masked_mean(values, jnp.array([1.0, 1.0, 0.0])), 2.0)
  np.testing.assert_allclose(reduce.masked_mean(values), 104.0 / 3)
  np.testing.assert_allclose(reduce.masked_mean(values, jnp.zeros(3)), 0.0)  # not NaN
  per_dim = jnp.array([[1.0, 2.0], [3.0, 4.0], [50.0, 60.0]])
  np.testing.assert_allclose(
    reduce.masked_mean(per_dim, jnp.array([1.0, 1.0, 0.0])), [2.0, 3.0]
  )  # trailing axes kept
  tokens = jnp.array([[1.0, 2.0], [3.0, 9.0]])
  np.testing.assert_allclose(
    reduce.masked_mean(tokens, jnp.array([[1.0, 1.0], [1.0, 0.0]])), 2.0
  )  # a mask of the values' shape: mean over counted entries


def test_recon_mse_is_the_mean_per_feature():
  x = jnp.zeros((2, 2, 3))
  recon = jnp.stack([jnp.full((2, 3), 2.0), jnp.ones((2, 3))])
  np.testing.assert_allclose(reconstruction.mean_squared_error(recon, x), [4.0, 1.0])
  np.testing.assert_allclose(reconstruction.nll(recon, x, "mse"), [24.0, 6.0])


# ----------------------------------------------------------------------------------------------
# band_weights / frequency_weighted_mse
# ----------------------------------------------------------------------------------------------


def test_band_weights_on_ten_rows():
  # Row f sits at f / 10: [0, 0.2) -> 1.5, [0.3, 0.7) -> 2.0, [0.8, 1.0] -> 0.8, gaps -> 1.
  expected = [1.5, 1.5, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.8, 0.8]
  np.testing.assert_array_equal(reconstruction.band_weights(10), np.float32(expected))
  np.testing.assert_array_equal(reconstruction.band_weights(4, (), default=0.5), np.full(4, 0.5))


def test_band_edges_at_128_mels():
  w = reconstruction.band_weights(128)
  # 0.2 * 128 = 25.6: rows 0..25 are below 0.2; 0.3 * 128 = 38.4: row 39 is the first >= 0.3.
  assert w[25] == 1.5 and w[26] == 1.0
  assert w[38] == 1.0 and w[39] == 2.0 and w[89] == 2.0 and w[90] == 1.0
  assert w[102] == 1.0 and w[103] == 0.8 and w[127] == 0.8
  assert (np.sum(w == 1.5), np.sum(w == 2.0), np.sum(w == 0.8)) == (26, 51, 25)


@pytest.mark.parametrize("band", [(0.5, 0.2, 1.0), (0.0, 1.2, 1.0), (0.0, 0.5, -1.0), (0.1, 0.2)])
def test_band_weights_rejects_bad_bands(band):
  with pytest.raises(ValueError, match="band"):
    reconstruction.band_weights(8, (band,))


def test_uniform_weights_give_plain_mse():
  recon, x = np.random.default_rng(0).normal(size=(2, 3, 6, 5)).astype(np.float32)
  mse = np.mean(np.square(recon - x), axis=(1, 2))
  np.testing.assert_allclose(
    reconstruction.frequency_weighted_mse(recon, x, jnp.full(6, 3.0)), mse, rtol=1e-6
  )


def test_weighted_mse_by_hand():
  x = jnp.zeros((1, 2, 2))
  recon = jnp.array([[[1.0, 1.0], [2.0, 2.0]]])
  # (1 * (1 + 1) + 3 * (4 + 4)) / ((1 + 3) * 2 frames) = 26 / 8
  value = reconstruction.frequency_weighted_mse(recon, x, jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(value, [3.25], rtol=1e-6)
  # A full [F, T] weight map: only the (1, 0) element counts.
  value = reconstruction.frequency_weighted_mse(recon, x, jnp.array([[0.0, 0.0], [1.0, 0.0]]))
  np.testing.assert_allclose(value, [4.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# spectral_loss
# ----------------------------------------------------------------------------------------------


def _tones(cycles, n_frames=32, n_rows=3):
  t = np.arange(n_frames) / n_frames
  return jnp.asarray(
    [[np.cos(2 * np.pi * c * t + r) for r in range(n_rows)] for c in cycles], jnp.float32
  )


def test_spectral_loss_zero_for_identical_and_positive_for_different():
  x = _tones([2, 3])
  for sizes in [(None,), (8, 16)]:
    np.testing.assert_allclose(_spectral(x, x, sizes), 0.0, atol=1e-6)
    assert np.all(np.asarray(_spectral(_tones([5, 7]), x, sizes)) > 0.1)


def test_full_length_spectral_loss_ignores_circular_time_shifts():
  x = np.random.default_rng(0).normal(size=(2, 4, 20)).astype(np.float32)
  shifted = np.roll(x, 7, axis=-1)
  assert np.max(np.abs(shifted - x)) > 0.5  # the inputs themselves differ
  np.testing.assert_allclose(_spectral(shifted, x), 0.0, atol=1e-5)
  np.testing.assert_allclose(_spectral(shifted, x, (None,), "l2"), 0.0, atol=1e-5)


def test_full_length_spectral_loss_by_hand():
  # cos(2 pi 3 t / 16) has |rfft| = 8 at bin 3 and 0 elsewhere (9 bins), against silence.
  x = _tones([3], n_frames=16, n_rows=1)
  zero = jnp.zeros_like(x)
  np.testing.assert_allclose(_spectral(zero, x), [8.0 / 9.0], rtol=1e-5)
  np.testing.assert_allclose(_spectral(zero, x, (None,), "l2"), [64.0 / 9.0], rtol=1e-5)


def _numpy_multires(recon, x, sizes):
  """Reference: windows start every size // 2 frames until one reaches the end (zero-padded)."""
  total = np.zeros(x.shape[0])
  for size in sizes:
    hop, t = size // 2, x.shape[-1]
    window = np.hanning(size + 1)[:-1]  # periodic Hann
    diffs, start = [], 0
    while True:

      def mag(a, start=start):
        seg = np.zeros(a.shape[:-1] + (size,))
        piece = a[..., start : start + size]
        seg[..., : piece.shape[-1]] = piece
        return np.abs(np.fft.rfft(seg * window, axis=-1))

      diffs.append(np.abs(mag(recon) - mag(x)))
      if start + size >= t:
        break
      start += hop
    total += np.mean(np.stack(diffs, -2).reshape(x.shape[0], -1), axis=-1)
  return total / len(sizes)


@pytest.mark.parametrize("n_frames", [21, 24, 5])
def test_multi_resolution_spectral_loss_matches_numpy(n_frames):
  recon, x = np.random.default_rng(n_frames).normal(size=(2, 2, 3, n_frames)).astype(np.float32)
  sizes = (4, 8, 16)
  expected = _numpy_multires(recon.astype(np.float64), x.astype(np.float64), sizes)
  np.testing.assert_allclose(_spectral(recon, x, sizes), expected, rtol=1e-5)


def test_spectral_loss_rejects_unknown_kind():
  with pytest.raises(ValueError, match="l1"):
    reconstruction.spectral_loss(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 4)), kind="l3")


# ----------------------------------------------------------------------------------------------
# range_penalty / free_bits_kl
# ----------------------------------------------------------------------------------------------


def test_range_penalty_zero_inside_and_exact_outside():
  x = jnp.array([[[0.0, 1.0], [0.2, 0.8]]])
  inside = jnp.array([[[0.0, 1.0], [0.5, 0.5]]])
  np.testing.assert_allclose(reconstruction.range_penalty(inside, x), [0.0])
  outside = jnp.array([[[1.5, -0.5], [0.5, 0.5]]])
  np.testing.assert_allclose(
    reconstruction.range_penalty(outside, x), [(0.25 + 0.25) / 4], rtol=1e-6
  )
  np.testing.assert_allclose(
    reconstruction.range_penalty(outside, x, margin=0.25), [(0.0625 + 0.0625) / 4], rtol=1e-6
  )


def test_range_is_per_example():
  x = jnp.stack([jnp.zeros((2, 2)), jnp.full((2, 2), 10.0)])
  recon = jnp.full((2, 2, 2), 5.0)  # inside neither example's (degenerate) range
  np.testing.assert_allclose(reconstruction.range_penalty(recon, x), [25.0, 25.0])


def test_free_bits_kl_counts_only_real_examples():
  mu = jnp.array([[1.0, 0.0], [3.0, 0.0]])
  logvar = jnp.zeros((2, 2))
  mask = jnp.array([1.0, 0.0])
  penalized, reported = divergence.free_bits_kl(mu, logvar, mask, 0.2)
  np.testing.assert_allclose(reported, 0.5)  # only example 0 counts: 0.5 * 1^2
  np.testing.assert_allclose(penalized, 0.5 + 0.2)  # dim 1 floored at 0.2
  ref = divergence.free_bits_kl(mu[:1], logvar[:1], jnp.ones(1), 0.2)  # the padded row dropped
  np.testing.assert_allclose((penalized, reported), ref)


# ----------------------------------------------------------------------------------------------
# spectral_elbo
# ----------------------------------------------------------------------------------------------


def _config(
  recon_loss="weighted_mse", spectral_weight=0.5, range_weight=2.0, fft_sizes=(4,), free_bits=0.0
):
  c = ml_collections.ConfigDict()
  c.objective = {
    "recon_loss": recon_loss,
    "bands": reconstruction.DEFAULT_BANDS,
    "spectral_weight": spectral_weight,
    "fft_sizes": fft_sizes,
    "range_weight": range_weight,
  }
  c.kl = {"free_bits": free_bits}
  return c


def _outputs_and_batch():
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(2, 10, 8))
  outputs = {
    "recon": x + 0.7 * rng.normal(size=x.shape),
    "mu": rng.normal(size=(2, 3)),
    "logvar": 0.1 * rng.normal(size=(2, 3)),
  }
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return {k: f32(v) for k, v in outputs.items()}, {"x": f32(x), "mask": jnp.ones((2,))}


def test_spectral_elbo_sums_its_terms():
  outputs, batch = _outputs_and_batch()
  loss, m = jax.jit(lambda o, b: spectral.spectral_elbo(o, b, kl_weight=0.3, config=_config()))(
    outputs, batch
  )
  # numpy references, batch means of per-example means
  x, recon = np.asarray(batch["x"], np.float64), np.asarray(outputs["recon"], np.float64)
  w = reconstruction.band_weights(10)[:, None]
  sq = np.square(recon - x)
  np.testing.assert_allclose(m["recon"], np.mean(np.sum(w * sq, (1, 2)) / (w.sum() * 8)), rtol=1e-5)
  np.testing.assert_allclose(m["spectral"], np.mean(_numpy_multires(recon, x, (4,))), rtol=1e-5)
  excess = np.maximum(recon - x.max((1, 2), keepdims=True), 0) + np.maximum(
    x.min((1, 2), keepdims=True) - recon, 0
  )
  np.testing.assert_allclose(m["range"], np.mean(np.square(excess)), rtol=1e-5)
  np.testing.assert_allclose(m["recon_mse"], np.mean(sq), rtol=1e-5)
  assert float(m["range"]) > 0 and float(m["kl"]) > 0
  np.testing.assert_allclose(
    loss, m["recon"] + 0.5 * m["spectral"] + 2.0 * m["range"] + 0.3 * m["kl"], rtol=1e-6
  )
  assert set(m) == {"loss", "recon", "spectral", "range", "kl", "recon_mse", "kl_weight"}


def test_spectral_elbo_ignores_padded_examples():
  outputs, batch = _outputs_and_batch()
  padded_out = {k: v.at[1].set(9.0) for k, v in outputs.items()}  # garbage in the pad slot
  padded = {"x": batch["x"], "mask": jnp.array([1.0, 0.0])}
  first_out = {k: v[:1] for k, v in outputs.items()}
  first = {"x": batch["x"][:1], "mask": jnp.ones((1,))}
  for cfg in [_config(), _config("mse", fft_sizes=())]:
    objective = jax.jit(
      lambda o, b, cfg=cfg: spectral.spectral_elbo(o, b, kl_weight=0.3, config=cfg)[1]
    )
    got, want = objective(padded_out, padded), objective(first_out, first)
    for key in want:
      np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def test_zero_weights_skip_their_terms(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("a term with weight 0 was computed")

  monkeypatch.setattr(reconstruction, "spectral_loss", fail)
  monkeypatch.setattr(reconstruction, "range_penalty", fail)
  outputs, batch = _outputs_and_batch()
  loss, m = spectral.spectral_elbo(
    outputs, batch, kl_weight=0.0, config=_config("mse", spectral_weight=0.0, range_weight=0.0)
  )
  assert float(m["spectral"]) == 0.0 and float(m["range"]) == 0.0
  np.testing.assert_allclose(loss, m["recon_mse"], rtol=1e-6)
  np.testing.assert_allclose(m["recon"], m["recon_mse"])


def test_spectral_elbo_rejects_unknown_recon_loss():
  outputs, batch = _outputs_and_batch()
  with pytest.raises(ValueError, match="recon_loss"):
    spectral.spectral_elbo(outputs, batch, kl_weight=0.0, config=_config("bce"))


@pytest.mark.parametrize(
  "key,value",
  [
    ("recon_loss", "bce"),
    ("spectral_weight", -1.0),
    ("fft_sizes", (8, 1)),
    ("bands", ((0.5, 0.1, 1.0),)),
  ],
)
def test_validate_names_the_bad_key(key, value):
  spectral.validate(_config())  # the defaults are fine
  config = _config()
  config.objective[key] = value
  with pytest.raises(errors.ConfigError, match=f"objective.{key}"):
    spectral.validate(config)


def test_silence_keeps_the_waveform_loss_and_its_gradient_finite():
  """A crop of silence (a pause in speech) against a quiet output: the spectral convergence's
  denominator is floored, so the loss is finite and of the order of an audible crop's, and so
  is its gradient (without the floor both were ~1e5 times larger and a run diverged)."""
  from jaxvae.losses import spectral as spectral_loss

  rng = np.random.default_rng(0)
  out = jnp.asarray(1e-2 * rng.standard_normal((2, 4096)), jnp.float32)
  audible = jnp.asarray(0.3 * rng.standard_normal((2, 4096)), jnp.float32)
  mask = jnp.ones((2,))

  def loss(y_hat, y):
    return spectral_loss.generator_terms(y, y_hat, mask, 22050, 1.0, 1.0, (512, 1024))[0]

  value_and_grad = jax.jit(jax.value_and_grad(loss))  # one compile for the four calls
  for target in (jnp.zeros_like(out), audible):
    value, grad = value_and_grad(out, target)
    assert np.isfinite(float(value)) and float(value) < 1e3
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.max(jnp.abs(grad))) < 1e3
  # An output that is exactly silent for a stretch (a waveform model learns exact zeros for
  # silence): |STFT| has a finite derivative there (features.magnitude_sqrt), no NaN.
  half_silent = out.at[:, :2048].set(0.0)
  for target in (jnp.zeros_like(out), audible):
    _, grad = value_and_grad(half_silent, target)
    assert np.all(np.isfinite(np.asarray(grad)))
  sc, _ = spectral_loss.stft_terms(audible, out, (512,))
  floored = float(spectral_loss.SC_FLOOR * np.sqrt(257 * 33))
  den = float(jnp.sqrt(jnp.sum(spectral_loss._magnitude(audible, 512)[0] ** 2)))
  assert den > 100 * floored  # an audible target never meets the floor


def test_kl_between_gaussians_by_hand_is_asymmetric_and_zero_at_equality():
  """KL(N(1, e^0.5) || N(-1, e^-1)) per dimension = 0.5 (lv_p - lv_q + (e^lv_q + (mu_q -
  mu_p)^2) / e^lv_p - 1), by hand; the other direction differs; N(0, I) as the second
  argument gives gaussian_kl."""
  mu_q, lv_q, mu_p, lv_p = (jnp.array([v]) for v in (1.0, 0.5, -1.0, -1.0))
  want = 0.5 * (-1.0 - 0.5 + (np.exp(0.5) + 4.0) / np.exp(-1.0) - 1.0)
  np.testing.assert_allclose(divergence.gaussian_kl_between(mu_q, lv_q, mu_p, lv_p), [want], 1e-6)
  back = divergence.gaussian_kl_between(mu_p, lv_p, mu_q, lv_q)
  assert abs(float(back[0]) - want) > 1.0
  np.testing.assert_allclose(
    divergence.gaussian_kl_between(mu_q, lv_q, mu_q, lv_q), [0.0], atol=1e-7
  )
  zero = jnp.zeros(1)
  np.testing.assert_allclose(
    divergence.gaussian_kl_between(mu_q, lv_q, zero, zero), divergence.gaussian_kl(mu_q, lv_q), 1e-6
  )
