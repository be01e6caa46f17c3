"""VaDE: the model's outputs, the ELBO against the paper's formula, GMM init, stages, learning."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from sklearn.mixture import GaussianMixture

from jaxvae.data.spec import DataSpec
from jaxvae.losses import clustering
from jaxvae.models import vade as vade_model
from jaxvae.training import state as train_state
from jaxvae.variants import vade

SHAPE = (4, 5)  # tiny "spectrogram": 20 features
K, L = 3, 2


def _config(recon="bce", **model):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(
    dict(
      name="vade",
      hidden=(16,),
      latent_dim=L,
      dropout=0.0,
      n_clusters=K,
      pretrain_epochs=2,
      gmm_lr_scale=0.5,
      output_activation="sigmoid",
    )
    | model
  )
  c.objective = ml_collections.ConfigDict({"recon": recon})
  c.train = ml_collections.ConfigDict({"epochs": 3})
  return c


def _model(config=None):
  return vade_model.build_vade((config or _config()).model, DataSpec(SHAPE))


def _batch(n=6, seed=0, mask=None):
  x = jax.random.uniform(jax.random.PRNGKey(seed), (n, *SHAPE))
  return {"x": x, "mask": jnp.ones((n,)) if mask is None else jnp.asarray(mask, jnp.float32)}


def _state(model, batch):
  variables = dict(train_state.init_variables(model, batch, jax.random.PRNGKey(1)))
  params = variables.pop("params")
  return train_state.TrainState(
    step=jnp.int32(0), params=params, model_state=variables, opt_state=(), rng=jax.random.PRNGKey(2)
  )


def _apply(model, state, batch, train_mode=False, step=0):
  rngs = train_state.step_rngs(state.rng, jnp.int32(step))
  variables = {"params": state.params, **state.model_state}
  if train_mode:
    return model.apply(variables, batch, train=True, rngs=rngs, mutable=list(state.model_state))[0]
  return model.apply(variables, batch, train=False, rngs=rngs)


# One compiled forward per (model, mode): op-by-op dispatch is slower than compiling once.
_apply_jit = jax.jit(_apply, static_argnums=(0, 3))


def _set_gmm(state, seed=3):
  """Arbitrary, well-separated mixture parameters (and the joint stage's noise on)."""
  r = np.random.default_rng(seed)
  gmm = {
    "pi_logits": r.normal(size=K).astype(np.float32),
    "mu_c": r.normal(scale=2.0, size=(K, L)).astype(np.float32),
    "logvar_c": r.normal(scale=0.5, size=(K, L)).astype(np.float32),
  }
  return vade.with_gmm(state, gmm), gmm


# ---------------------------------------------------------------------------------------------
# numpy references (written from the paper, independently of the JAX code)
# ---------------------------------------------------------------------------------------------


def _np_log_softmax(a, axis=-1):
  a = a - a.max(axis=axis, keepdims=True)
  return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


def _np_gamma(z, gmm):
  """p(c | z) by Bayes' rule with explicit diagonal Gaussian densities."""
  pi = np.exp(_np_log_softmax(gmm["pi_logits"].astype(np.float64)))
  var = np.exp(gmm["logvar_c"].astype(np.float64))
  z = z.astype(np.float64)
  dens = np.stack(
    [
      np.prod(
        np.exp(-((z - gmm["mu_c"][c]) ** 2) / (2 * var[c])) / np.sqrt(2 * np.pi * var[c]), axis=-1
      )
      for c in range(K)
    ],
    -1,
  )
  joint = pi * dens
  return joint / joint.sum(-1, keepdims=True)


def _np_elbo(x, recon, mu, logvar, gamma, gmm):
  """The paper's eq. 16 (Bernoulli decoder), per example, in float64."""
  x, recon = x.reshape(len(x), -1).astype(np.float64), recon.reshape(len(x), -1)
  mu, logvar, gamma = (a.astype(np.float64) for a in (mu, logvar, gamma))
  pi = np.exp(_np_log_softmax(gmm["pi_logits"].astype(np.float64)))
  log_px = np.sum(x * np.log(recon) + (1 - x) * np.log(1 - recon), -1)
  prior = np.zeros(len(x))
  for c in range(K):
    var_c = np.exp(gmm["logvar_c"][c])
    inner = np.log(var_c) + np.exp(logvar) / var_c + (mu - gmm["mu_c"][c]) ** 2 / var_c
    prior -= 0.5 * gamma[:, c] * inner.sum(-1)
  cat = np.sum(gamma * np.log(pi / gamma), -1)
  ent_z = 0.5 * np.sum(1 + logvar, -1)
  return log_px + prior + cat + ent_z


def _outputs(seed=0, n=5):
  """Fixed small arrays in the shape of the model's outputs (gamma from p(c | z))."""
  r = np.random.default_rng(seed)
  gmm = {
    "pi_logits": r.normal(size=K),
    "mu_c": r.normal(size=(K, L)),
    "logvar_c": r.normal(scale=0.3, size=(K, L)),
  }
  mu, logvar = r.normal(size=(n, L)), r.normal(scale=0.3, size=(n, L))
  z = mu + np.exp(0.5 * logvar) * r.normal(size=(n, L))
  gamma = _np_gamma(z, gmm)
  out = {
    "mu": mu,
    "logvar": logvar,
    "gamma": gamma,
    "log_gamma": np.log(gamma),
    "recon": r.uniform(0.05, 0.95, size=(n, *SHAPE)),
  } | gmm
  batch = {"x": r.uniform(size=(n, *SHAPE)), "mask": np.ones(n)}
  as_f32 = lambda d: {k: jnp.asarray(v, jnp.float32) for k, v in d.items()}
  return as_f32(out), as_f32(batch), out, batch


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def test_shapes_and_pretrain_mode_is_deterministic():
  model, batch = _model(), _batch()
  state = _state(model, batch)
  out = _apply_jit(model, state, batch, True)
  chex.assert_shape(out["recon"], (6, *SHAPE))
  chex.assert_shape([out["mu"], out["logvar"], out["z"]], (6, L))
  chex.assert_shape([out["gamma"], out["log_gamma"]], (6, K))
  chex.assert_shape(out["assignments"], (6,))
  chex.assert_shape([out["mu_c"], out["logvar_c"]], (K, L))
  chex.assert_type([out["recon"], out["gamma"], out["mu"]], jnp.float32)
  assert out["assignments"].dtype == jnp.int32
  # Before gmm_init the model is the pretraining autoencoder: z is the mean.
  np.testing.assert_array_equal(out["z"], out["mu"])
  joint, _ = _set_gmm(state)
  out = _apply_jit(model, joint, batch)
  assert np.abs(np.asarray(out["z"] - out["mu"])).max() > 1e-3


def test_gamma_is_the_cluster_posterior():
  model, batch = _model(), _batch()
  state, gmm = _set_gmm(_state(model, batch))
  out = _apply_jit(model, state, batch)
  gamma = np.asarray(out["gamma"])
  np.testing.assert_allclose(gamma.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(gamma, _np_gamma(np.asarray(out["z"]), gmm), atol=1e-5)
  np.testing.assert_allclose(np.exp(out["log_gamma"]), gamma, atol=1e-6)
  np.testing.assert_array_equal(
    out["assignments"], _np_gamma(np.asarray(out["mu"]), gmm).argmax(-1)
  )


def test_gamma_is_stable_far_from_every_cluster():
  """Densities underflow to 0 far away; the log-sum-exp posterior must stay finite."""
  z = jnp.full((2, L), 1e3)
  log_gamma = vade_model.cluster_log_posterior(
    z, jnp.zeros(K), jnp.zeros((K, L)), jnp.log(jnp.full((K, L), 1e-2))
  )
  assert np.isfinite(np.asarray(log_gamma)).all()
  np.testing.assert_allclose(np.exp(log_gamma).sum(-1), 1.0, atol=1e-5)


def test_pi_is_a_softmax_of_logits():
  """Weights come from unconstrained logits: softmax sums to 1 and a fitted GMM's weights
  survive the round trip (the original softmaxed already-normalized weights)."""
  logits = jnp.asarray([3.0, -2.0, 0.5])
  pi = jax.nn.softmax(logits)
  np.testing.assert_allclose(pi.sum(), 1.0, atol=1e-6)
  means = np.random.default_rng(0).normal(size=(60, L)) + np.repeat(np.eye(K, L) * 6, 20, 0)
  fitted = vade.fit_gmm(means, K, seed=0)
  center, scale = vade.standardization(means)
  gmm = GaussianMixture(K, covariance_type="diag", random_state=0).fit((means - center) / scale)
  np.testing.assert_allclose(jax.nn.softmax(fitted["pi_logits"]), gmm.weights_, atol=1e-6)
  # A constant shift of the logits is the same prior: gamma must not change.
  z = jnp.asarray(means[:5], jnp.float32)
  a = vade_model.cluster_log_posterior(z, logits, fitted["mu_c"], fitted["logvar_c"])
  b = vade_model.cluster_log_posterior(z, logits + 7.0, fitted["mu_c"], fitted["logvar_c"])
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_fit_gmm_is_the_mixture_of_the_raw_means():
  """Fitted in standardized units, the mixture maps back exactly: its log-likelihood of the
  raw means is sklearn's standardized score minus the log of the scaling's Jacobian; a dead
  dimension is neither scaled up nor given a variance below sklearn's floor."""
  rng = np.random.default_rng(1)
  means = np.repeat(np.eye(K, L) * 6, 20, 0) * rng.uniform(0.1, 10, L) + rng.normal(size=(60, L))
  means[:, -1] = 3.0 + 1e-7 * rng.normal(size=60)  # a dead dimension
  fitted = vade.fit_gmm(means, K, seed=0)
  center, scale = vade.standardization(means)
  assert scale[-1] == 1.0 and (scale[:-1] > 0.1).all()
  gmm = GaussianMixture(K, covariance_type="diag", n_init=10, random_state=0)
  gmm.fit((means - center) / scale)
  z = jnp.asarray(means, jnp.float32)
  joint = vade_model.log_joint(z, *(jnp.asarray(fitted[k]) for k in vade_model.GMM_PARAMS))
  ours = float(jnp.mean(jax.nn.logsumexp(joint, axis=-1)))
  ref = gmm.score((means - center) / scale) - np.log(scale).sum()
  assert abs(ours - ref) < 1e-3 * abs(ref)
  assert (fitted["logvar_c"] >= np.log(vade.VARIANCE_FLOOR) - 1e-6).all()


def test_prior_samples_follow_the_mixture():
  model, batch = _model(), _batch()
  state, gmm = _set_gmm(_state(model, batch))
  variables = {"params": state.params, **state.model_state}
  rngs = {"sample": jax.random.PRNGKey(5)}
  z = np.asarray(model.apply(variables, 40_000, rngs=rngs, method="sample_prior"))
  chex.assert_shape(z, (40_000, L))
  pi = np.exp(_np_log_softmax(gmm["pi_logits"].astype(np.float64)))
  np.testing.assert_allclose(z.mean(0), pi @ gmm["mu_c"], atol=0.05)
  one = np.asarray(model.apply(variables, 20_000, 1, rngs=rngs, method="sample_prior"))
  np.testing.assert_allclose(one.mean(0), gmm["mu_c"][1], atol=0.05)
  np.testing.assert_allclose(one.var(0), np.exp(gmm["logvar_c"][1]), rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------


def test_objective_is_the_papers_negative_elbo():
  out, batch, np_out, np_batch = _outputs()
  loss, metrics = vade.objective(out, batch, kl_weight=1.0, config=_config())
  elbo = _np_elbo(
    np_batch["x"], np_out["recon"], np_out["mu"], np_out["logvar"], np_out["gamma"], np_out
  )
  np.testing.assert_allclose(loss, -elbo.mean(), rtol=1e-5)
  entropy = -np.sum(np_out["gamma"] * np.log(np_out["gamma"]), -1).mean()
  np.testing.assert_allclose(metrics["entropy"], entropy, rtol=1e-5)
  assert entropy > 0.05  # the entropy term is not negligible here, so dropping it would fail
  np.testing.assert_allclose(metrics["loss"], metrics["recon"] + metrics["kl"], rtol=1e-6)
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())


def test_kl_matches_a_monte_carlo_estimate():
  """KL(q(z|x) q(c|x) || p(z|c) p(c)) estimated by sampling z: checks signs and constants."""
  out, _, np_out, _ = _outputs(seed=1, n=2)
  kl, _ = clustering.vade_kl(
    *(out[k] for k in ("mu", "logvar", "gamma", "log_gamma", "pi_logits", "mu_c", "logvar_c"))
  )
  r = np.random.default_rng(0)
  mu, logvar, gamma = np_out["mu"], np_out["logvar"], np_out["gamma"]
  for i in range(2):
    z = mu[i] + np.exp(0.5 * logvar[i]) * r.normal(size=(400_000, L))
    log_q = np.sum(
      -0.5 * (np.log(2 * np.pi) + logvar[i] + (z - mu[i]) ** 2 / np.exp(logvar[i])), -1
    )
    log_p = _np_log_softmax(np_out["pi_logits"])[None] + np.stack(
      [
        np.sum(
          -0.5
          * (
            np.log(2 * np.pi)
            + np_out["logvar_c"][c]
            + (z - np_out["mu_c"][c]) ** 2 / np.exp(np_out["logvar_c"][c])
          ),
          -1,
        )
        for c in range(K)
      ],
      -1,
    )
    estimate = np.mean(np.sum(gamma[i] * (log_q[:, None] + np.log(gamma[i]) - log_p), -1))
    np.testing.assert_allclose(kl[i], estimate, atol=0.02)
    assert kl[i] >= 0


def test_objective_weights_the_kl_and_the_mask():
  out, batch, _, _ = _outputs()
  cfg = _config()
  full, m = vade.objective(out, batch, kl_weight=1.0, config=cfg)
  half, _ = vade.objective(out, batch, kl_weight=0.5, config=cfg)
  np.testing.assert_allclose(half, m["recon"] + 0.5 * m["kl"], rtol=1e-6)
  assert abs(float(full - half)) > 1e-3
  masked = dict(batch, mask=jnp.asarray([1, 1, 0, 0, 0], jnp.float32))
  first_two = jax.tree.map(lambda a: a[:2] if a.ndim and a.shape[0] == 5 else a, out)
  a, _ = vade.objective(out, masked, kl_weight=1.0, config=cfg)
  b, _ = vade.objective(
    first_two, {"x": batch["x"][:2], "mask": jnp.ones(2)}, kl_weight=1.0, config=cfg
  )
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_pretrain_objective_is_reconstruction_only():
  out, batch, np_out, np_batch = _outputs()
  loss, metrics = vade.pretrain_objective(out, batch, kl_weight=1.0, config=_config("mse"))
  expected = np.sum((np_out["recon"] - np_batch["x"]) ** 2, axis=(1, 2)).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["recon_mse"], expected / 20, rtol=1e-5)
  assert set(metrics) == {"loss", "recon", "recon_mse"}


# ---------------------------------------------------------------------------------------------
# GMM init, optimizer labels, stages
# ---------------------------------------------------------------------------------------------


def test_gmm_init_fits_the_latent_means_of_real_examples():
  config = _config()
  model = _model(config)
  data = [_batch(8, seed=s, mask=[1] * 8 if s < 2 else [1] * 5 + [0] * 3) for s in range(3)]
  state = _state(model, data[0])
  new = vade.gmm_init(state, model, lambda: iter(data), config)
  means = np.concatenate(
    [np.asarray(_apply_jit(model, state, b)["mu"])[np.asarray(b["mask"]) > 0] for b in data]
  )
  assert means.shape == (21, L)
  # The reference: sklearn's fit on the standardized means, mapped back to latent units.
  means = means.astype(np.float64)  # as gmm_init's encode_means hands them over
  center, scale = means.mean(0), means.std(0)
  gmm = GaussianMixture(K, covariance_type="diag", n_init=10, random_state=config.seed)
  gmm.fit((means - center) / scale)
  np.testing.assert_allclose(jax.nn.softmax(new.params["pi_logits"]), gmm.weights_, atol=1e-5)
  np.testing.assert_allclose(new.params["mu_c"], gmm.means_ * scale + center, atol=1e-5)
  np.testing.assert_allclose(
    jnp.exp(new.params["logvar_c"]), gmm.covariances_ * scale**2, rtol=1e-4
  )
  assert float(new.model_state["vade"]["posterior_noise"]) == 1.0
  out = _apply_jit(model, new, data[0])
  np.testing.assert_array_equal(out["assignments"], gmm.predict((means[:8] - center) / scale))
  # The network is untouched.
  chex.assert_trees_all_equal(new.params["mu_head"], state.params["mu_head"])


def test_tsne_clusters_find_the_groups_of_the_inputs():
  # Three groups far apart in 60 input dimensions (more than the 50 PCA keeps), 20 points each.
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 10, (K, 60))
  truth = np.repeat(np.arange(K), 20)
  inputs = centers[truth] + rng.normal(0, 1, (len(truth), 60))
  labels = vade.tsne_clusters(inputs.astype(np.float32), K, seed=0)
  table = np.zeros((K, K))
  np.add.at(table, (truth, labels), 1)
  assert sorted(table.max(1)) == [20, 20, 20] and (table > 0).sum() == K  # one cluster each
  with pytest.raises(ValueError, match="model.n_clusters"):
    vade.tsne_clusters(inputs[:2], K, seed=0)


def test_mixture_from_clusters_is_each_clusters_moments():
  rng = np.random.default_rng(1)
  means = rng.normal(size=(12, L))
  means[9:11] = 0.5  # cluster 2: two identical points, variance 0 -> the floor
  # Cluster 3 has one member (the overall variance), cluster 4 none (negligible weight).
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3])
  start = vade.mixture_from_clusters(means, labels, 5)
  weights = np.exp(start["pi_logits"])
  np.testing.assert_allclose(weights[:4], [4 / 12, 5 / 12, 2 / 12, 1 / 12], rtol=1e-5)
  assert weights[4] < 1e-6
  np.testing.assert_allclose(start["mu_c"][1], means[4:9].mean(0), rtol=1e-5)
  np.testing.assert_allclose(np.exp(start["logvar_c"][0]), means[:4].var(0), rtol=1e-4)
  np.testing.assert_allclose(np.exp(start["logvar_c"][2]), vade.VARIANCE_FLOOR, rtol=1e-4)
  np.testing.assert_allclose(start["mu_c"][3], means[11], rtol=1e-5)
  np.testing.assert_allclose(np.exp(start["logvar_c"][3]), means.var(0), rtol=1e-4)
  np.testing.assert_allclose(start["mu_c"][4], means.mean(0), rtol=1e-5)


def test_gmm_init_from_a_tsne_of_the_inputs():
  config = _config(gmm_start="tsne_inputs")
  vade.validate(config)
  model = _model(config)
  # Two groups of inputs far apart, masked padding in the last batch.
  data = []
  for s in range(3):
    b = _batch(8, seed=s, mask=[1] * 8 if s < 2 else [1] * 5 + [0] * 3)
    data.append(b | {"x": b["x"] + 3.0 * (jnp.arange(8) % 2)[:, None, None]})
  state = _state(model, data[0])
  new = vade.gmm_init(state, model, lambda: iter(data), config)
  means, inputs = vade.encode_means(state, model, lambda: iter(data), with_inputs=True)
  assert means.shape == (21, L) and inputs.shape == (21, SHAPE[0] * SHAPE[1])
  odd = np.concatenate([np.arange(8) % 2] * 2 + [np.arange(5) % 2]) == 1  # the real rows
  np.testing.assert_array_equal(inputs.mean(1) > 2.0, odd)  # padding dropped, order kept
  labels = vade.tsne_clusters(inputs, K, 0)
  assert not set(labels[odd]) & set(labels[~odd])  # no cluster mixes the two groups
  expected = vade.mixture_from_clusters(means, labels, K)
  for name in ("pi_logits", "mu_c", "logvar_c"):
    np.testing.assert_allclose(new.params[name], expected[name], rtol=1e-5, atol=1e-6)
  assert float(new.model_state["vade"]["posterior_noise"]) == 1.0


def test_param_labels_mark_exactly_the_gmm():
  model, batch = _model(), _batch()
  params = _state(model, batch).params
  labels = vade_model.param_labels(params)
  flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  gmm = sorted(jax.tree_util.keystr(p) for p, v in flat if v == "gmm")
  assert gmm == ["['logvar_c']", "['mu_c']", "['pi_logits']"]
  assert sum(v == "net" for _, v in flat) == len(flat) - 3 > 0
  mult = vade.lr_multipliers(params, _config())
  assert mult["mu_c"] == 0.5 and mult["mu_head"]["kernel"] == 1.0
  tx = optax.multi_transform({"gmm": optax.adam(1e-3), "net": optax.adam(1e-2)}, labels)
  tx.init(params)  # the labels tree fits the params tree


def test_stages():
  config = _config()
  first, second = vade.stages(config)
  assert (first.name, first.epochs, first.on_start) == ("pretrain", 2, None)
  assert first.objective is vade.pretrain_objective
  assert (second.name, second.epochs) == ("joint", 3)
  assert second.objective is vade.objective and second.on_start is vade.gmm_init


def test_a_few_steps_lower_the_vade_loss():
  config = _config()
  model, batch = _model(config), _batch(8)
  state, _ = _set_gmm(_state(model, batch))
  tx = optax.adam(1e-2)
  opt_state = tx.init(state.params)

  def loss_fn(params, step, train_mode):
    s = state.replace(params=params)
    out = _apply(model, s, batch, train_mode=train_mode, step=step)
    return vade.objective(out, batch, kl_weight=1.0, config=config)[0]

  @jax.jit
  def step_fn(params, opt_state, step):
    grads = jax.grad(loss_fn)(params, step, True)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  # Batch statistics (train mode) with fixed keys: the running averages are never updated here.
  eval_loss = jax.jit(lambda p: jnp.mean(jnp.stack([loss_fn(p, -1 - i, True) for i in range(4)])))
  before = float(eval_loss(state.params))
  params = state.params
  for i in range(30):
    params, opt_state = step_fn(params, opt_state, i)
  after = float(eval_loss(params))
  assert np.isfinite(after) and after < before - 0.05 * abs(before), (before, after)


def test_config_mistakes_name_the_key():
  from jaxvae.errors import ConfigError

  vade.validate(_config())
  with pytest.raises(ConfigError, match="model.n_clusters"):
    vade.validate(_config(n_clusters=0))
  with pytest.raises(ConfigError, match="output_activation"):
    vade.validate(_config(output_activation="none"))
  with pytest.raises(ConfigError, match="model.gmm_start"):
    vade.validate(_config(gmm_start="kmeans"))
  with pytest.raises(ValueError, match="model.n_clusters"):
    vade.fit_gmm(np.zeros((2, L)), K, seed=0)


def test_denoising_pretraining_corrupts_inputs_only_while_pretraining():
  """model.pretrain_noise zeroes inputs in training during the pretraining stage only: the
  joint stage and evaluation see clean inputs."""
  batch = _batch()
  clean, noisy = _model(), _model(_config(pretrain_noise=0.5))
  state = _state(clean, batch)
  pre_clean = _apply_jit(clean, state, batch, True)["mu"]
  pre_noisy = _apply_jit(noisy, state, batch, True)["mu"]
  assert not np.allclose(pre_clean, pre_noisy)
  np.testing.assert_allclose(  # evaluation: no noise
    _apply_jit(noisy, state, batch, False)["mu"], _apply_jit(clean, state, batch, False)["mu"]
  )
  joint, _ = _set_gmm(state)  # the joint stage: posterior noise on, inputs clean
  np.testing.assert_allclose(
    _apply_jit(noisy, joint, batch, True)["mu"], _apply_jit(clean, joint, batch, True)["mu"]
  )
  from jaxvae.errors import ConfigError

  with pytest.raises(ConfigError, match="model.pretrain_noise"):
    vade.validate(_config(pretrain_noise=1.0))
