"""Objectives for the token-sequence family (seed 001): LM, VAE, and the VAE-GAN step.

Targets are `batch['tokens'][:, 1:]` (the model's logits are already shifted, see
`jaxvae.models.transformer`); target positions holding `midi.PAD` and examples with
`batch['mask'] == 0` are left out. Token-level metrics (`nll`, `accuracy`) are means over
the counted target tokens of the batch; everything is float32.

Stage 3 (VAE-GAN) makes one generator and one discriminator update per step: the
discriminator sees real windows as one-hot rows and the generator's teacher-forced
predictions as straight-through Gumbel-softmax samples, so the forward pass shows it a
sequence of ids (like the real one) while the backward pass carries the adversarial gradient
to the generator through the softmax (the original fed it sampled ids: no gradient).
`vaegan_train_step` applies `vaegan_grads` with an optimizer per side; a single
optax.multi_transform over `transformer.param_labels(params)` can apply them as well.

GAN settings are read from `config.objective` with defaults: adv_weight (0.2),
adv_weight_start (= adv_weight) and adv_ramp_steps (0: constant), fm_weight (1.0),
r1_weight (1.0), gan_loss ('hinge' or 'ns'); and `config.model.gumbel_tau` (1.0).
`objective.kl_scale` is described in `vae_objective`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxvae.losses import core as objectives
from jaxvae.symbolic.midi import PAD
from jaxvae.models import transformer as transformer_lib


# ---------------------------------------------------------------------------------------------
# Token likelihood
# ---------------------------------------------------------------------------------------------

def target_weights(batch) -> jax.Array:
  """float32 [B, T-1]: 1 where a target token is counted (not PAD, in a real example)."""
  targets = batch["tokens"][:, 1:]
  return (targets != PAD).astype(jnp.float32) * batch["mask"].astype(jnp.float32)[:, None]


def token_terms(logits, batch) -> dict[str, jax.Array]:
  """Summed NLL and accuracy over counted targets, and the counts needed to average them."""
  targets = batch["tokens"][:, 1:]
  weights = target_weights(batch)
  logits = logits.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  count = jnp.sum(weights)
  examples = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
  return {"nll": jnp.sum(nll * weights) / jnp.maximum(count, 1.0),
          "accuracy": jnp.sum(correct * weights) / jnp.maximum(count, 1.0),
          "tokens_per_example": jnp.maximum(count / examples, 1.0)}


def _token_metrics(terms) -> dict[str, jax.Array]:
  return {"nll": terms["nll"], "ppl": jnp.exp(terms["nll"]), "accuracy": terms["accuracy"]}


def lm_objective(outputs, batch, *, kl_weight, config):
  """Stage 1: mean next-token NLL (nats per token)."""
  del kl_weight, config
  terms = token_terms(outputs["logits"], batch)
  return terms["nll"], {"loss": terms["nll"], **_token_metrics(terms)}


def vae_objective(outputs, batch, *, kl_weight, config):
  """Stage 2: NLL + kl_weight * KL, with `config.kl.free_bits` nats per latent dimension.

  `config.objective.kl_scale` (default 'per_token') divides the per-window KL by the number
  of target tokens per window, so that kl_weight = 1 is the exact negative ELBO per token;
  'per_example' adds the per-window KL to the per-token NLL as it is.
  Reports `kl` (nats per window) and its share per latent level (`kl_global`, ...).
  """
  terms = token_terms(outputs["logits"], batch)
  kl_penalized, kl = objectives.kl_term(outputs["mu"], outputs["logvar"], batch,
                                        config.kl.free_bits)
  scale = config.objective.get("kl_scale", "per_token")
  per = terms["tokens_per_example"] if scale == "per_token" else 1.0
  loss = terms["nll"] + jnp.asarray(kl_weight, jnp.float32) * kl_penalized / per
  metrics = {"loss": loss, **_token_metrics(terms), "kl": kl,
             "kl_weight": jnp.asarray(kl_weight, jnp.float32)}
  cfg = transformer_lib.config_from(config.model)
  for name, part in transformer_lib.latent_levels(cfg).items():
    metrics[f"kl_{name}"] = objectives.kl_term(outputs["mu"][:, part],
                                               outputs["logvar"][:, part], batch, 0.0)[1]
  return loss, metrics


# ---------------------------------------------------------------------------------------------
# GAN pieces (`outs` is the list that `MusicTransformer.discriminate` returns)
# ---------------------------------------------------------------------------------------------

def gumbel_softmax(logits, rng, tau: float = 1.0, hard: bool = True):
  """Samples [.., V] rows; with `hard`, one-hot forward and softmax gradient (straight-through)."""
  gumbel = jax.random.gumbel(rng, logits.shape, jnp.float32)
  soft = jax.nn.softmax((logits.astype(jnp.float32) + gumbel) / tau, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, -1), logits.shape[-1], dtype=soft.dtype)
  return one_hot + soft - jax.lax.stop_gradient(soft)


def real_and_fake(logits, batch, rng, tau: float):
  """(real one-hot, fake ST-Gumbel sample), both [B, T-1, V] and zero at PAD targets."""
  weights = (batch["tokens"][:, 1:] != PAD).astype(jnp.float32)[..., None]
  real = jax.nn.one_hot(batch["tokens"][:, 1:], logits.shape[-1], dtype=jnp.float32)
  fake = gumbel_softmax(logits, rng, tau)
  return real * weights, fake * weights


def _mean(values, mask):
  return objectives.masked_mean(values, {"mask": mask}) if mask is not None else jnp.mean(values)


def discriminator_loss(real_outs, fake_outs, mask=None, kind: str = "hinge"):
  """Summed over scales: hinge E[relu(1 - D(real))] + E[relu(1 + D(fake))], or the
  non-saturating E[softplus(-D(real))] + E[softplus(D(fake))]."""
  total = 0.0
  for real, fake in zip(real_outs, fake_outs):
    r, f = real["logits"], fake["logits"]
    if kind == "hinge":
      total += _mean(jax.nn.relu(1.0 - r), mask) + _mean(jax.nn.relu(1.0 + f), mask)
    else:
      total += _mean(jax.nn.softplus(-r), mask) + _mean(jax.nn.softplus(f), mask)
  return total


def generator_adv_loss(fake_outs, mask=None, kind: str = "hinge"):
  """Summed over scales: hinge -E[D(fake)], or non-saturating E[softplus(-D(fake))]."""
  total = 0.0
  for fake in fake_outs:
    f = fake["logits"]
    total += _mean(-f, mask) if kind == "hinge" else _mean(jax.nn.softplus(-f), mask)
  return total


def feature_matching_loss(real_outs, fake_outs, mask=None):
  """Mean L1 between the discriminator's features of a window and of its reconstruction,
  averaged over all layers of all scales; the real side is a constant target."""
  losses = []
  for real, fake in zip(real_outs, fake_outs):
    for fr, ff in zip(real["features"], fake["features"]):
      diff = jnp.abs(jax.lax.stop_gradient(fr) - ff)
      losses.append(_mean(jnp.mean(diff.reshape(diff.shape[0], -1), -1), mask))
  return sum(losses) / max(len(losses), 1)


def r1_penalty(disc_fn: Callable, real_inputs, mask=None):
  """R1 = 0.5 * E ||d sum_scales D(x) / dx||^2 over real inputs (per example, masked mean).

  `disc_fn(x)` returns the discriminator output list; the discriminator has no batch
  statistics, so the gradient of the batch sum splits into per-example gradients.
  """
  def total(x):
    return jnp.sum(sum(out["logits"] for out in disc_fn(x)))

  grads = jax.grad(total)(real_inputs.astype(jnp.float32))
  per_example = 0.5 * jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), -1)
  return _mean(per_example, mask)


# ---------------------------------------------------------------------------------------------
# The VAE-GAN step
# ---------------------------------------------------------------------------------------------

def adv_weight_fn(config) -> Callable:
  """step -> adversarial weight: linear from `objective.adv_weight_start` to
  `objective.adv_weight` over `objective.adv_ramp_steps` (0: constant adv_weight)."""
  obj = config.objective
  end = float(obj.get("adv_weight", 0.2))
  start = float(obj.get("adv_weight_start", end))
  ramp = int(obj.get("adv_ramp_steps", 0))
  if ramp <= 0:
    return lambda step: jnp.float32(end)
  return lambda step: jnp.float32(
      start + (end - start) * jnp.clip(step.astype(jnp.float32) / ramp, 0.0, 1.0))


def _gan_kind(config) -> str:
  kind = config.objective.get("gan_loss", "hinge")
  if kind not in ("hinge", "ns"):
    raise ValueError(f"config key 'objective.gan_loss' is {kind!r}: expected 'hinge' or 'ns'")
  return kind


def _disc_fn(model, disc_params, mask):
  return lambda x: model.apply({"params": {"discriminator": disc_params}}, x, mask,
                               method="discriminate")


def adversarial_terms(model, disc_params, logits, batch, gumbel_rng, config):
  """The generator's GAN terms from its logits: (adv, fm, real, fake, target_weights).

  `fake` (and so `adv` and `fm`) is differentiable in the logits, hence in whatever
  parameters produced them.
  """
  tau = float(config.model.get("gumbel_tau", 1.0))
  real, fake = real_and_fake(logits, batch, gumbel_rng, tau)
  weights = (batch["tokens"][:, 1:] != PAD).astype(jnp.float32)
  disc = _disc_fn(model, disc_params, weights)
  real_outs, fake_outs = disc(real), disc(fake)
  adv = generator_adv_loss(fake_outs, batch["mask"], _gan_kind(config))
  fm = feature_matching_loss(real_outs, fake_outs, batch["mask"])
  return adv, fm, real, fake, weights


def generator_terms(model, params, batch, rngs, gumbel_rng, *, kl_weight, adv_weight, config):
  """Generator loss = VAE loss + adv_weight * adversarial + fm_weight * feature matching.

  Returns (loss, (metrics, real, fake, target_weights)).
  """
  outputs = model.apply({"params": params}, batch, train=True, rngs=rngs)
  vae_loss, metrics = vae_objective(outputs, batch, kl_weight=kl_weight, config=config)
  adv, fm, real, fake, weights = adversarial_terms(model, params["discriminator"],
                                                   outputs["logits"], batch, gumbel_rng, config)
  loss = vae_loss + adv_weight * adv + float(config.objective.get("fm_weight", 1.0)) * fm
  metrics = dict(metrics, vae_loss=vae_loss, loss=loss, adv_g=adv, fm=fm,
                 adv_weight=jnp.asarray(adv_weight, jnp.float32))
  return loss, (metrics, real, fake, weights)


def discriminator_terms(model, disc_params, real, fake, weights, batch, config):
  """Discriminator loss + r1_weight * R1 on the real windows; returns (loss, metrics)."""
  obj = config.objective
  disc = _disc_fn(model, disc_params, weights)
  real_outs, fake_outs = disc(real), disc(fake)
  adv = discriminator_loss(real_outs, fake_outs, batch["mask"], _gan_kind(config))
  r1_weight = float(obj.get("r1_weight", 1.0))
  r1 = r1_penalty(disc, real, batch["mask"]) if r1_weight > 0 else jnp.float32(0.0)
  d_real = sum(_mean(o["logits"], batch["mask"]) for o in real_outs) / len(real_outs)
  d_fake = sum(_mean(o["logits"], batch["mask"]) for o in fake_outs) / len(fake_outs)
  loss = adv + r1_weight * r1
  return loss, {"loss_d": loss, "adv_d": adv, "r1": r1, "d_real": d_real, "d_fake": d_fake}


def vaegan_grads(model, params, batch, rngs, gumbel_rng, *, kl_weight, adv_weight, config):
  """Both sides' gradients for one VAE-GAN step: (grads, metrics, generator loss).

  `grads` = {'generator': d(generator loss), 'discriminator': d(discriminator loss)}. The
  generator's is taken against the current discriminator; the discriminator's on the same
  real windows and on the generator's samples, detached. Neither depends on the other's
  update, so one generator update and one discriminator update can be applied together
  (one optimizer with a part per side) or in turn, with the same result, and the
  generator's forward pass runs once.
  """
  gen, disc = params["generator"], params["discriminator"]

  def gen_loss(gen_params):
    return generator_terms(model, {"generator": gen_params, "discriminator": disc}, batch,
                           rngs, gumbel_rng, kl_weight=kl_weight, adv_weight=adv_weight,
                           config=config)

  (loss, (g_metrics, real, fake, weights)), g_grads = jax.value_and_grad(
      gen_loss, has_aux=True)(gen)
  fake = jax.lax.stop_gradient(fake)
  (_, d_metrics), d_grads = jax.value_and_grad(
      lambda p: discriminator_terms(model, p, real, fake, weights, batch, config),
      has_aux=True)(disc)
  metrics = {**g_metrics, **d_metrics, "grad_norm_g": optax.tree.norm(g_grads),
             "grad_norm_d": optax.tree.norm(d_grads)}
  return {"generator": g_grads, "discriminator": d_grads}, metrics, loss


def _kl_weight(kl_fn, step, config):
  return kl_fn(step) if kl_fn is not None else jnp.float32(config.kl.beta_end)


_OPT = {"generator": "opt_gen", "discriminator": "opt_disc"}  # optimizer state per side


def init_vaegan_state(params, tx_gen, tx_disc) -> dict:
  """The state of `vaegan_train_step`: {'step', 'params': {'generator', 'discriminator'},
  'opt_gen', 'opt_disc'}."""
  return {"step": jnp.int32(0), "params": params,
          "opt_gen": tx_gen.init(params["generator"]),
          "opt_disc": tx_disc.init(params["discriminator"])}


def vaegan_train_step(model, tx_gen, tx_disc, config, kl_fn: Callable | None = None):
  """Returns the pure `step(state, batch, rng) -> (state, metrics)` of stage 3, with one
  optimizer per side (state from `init_vaegan_state`). `rng` is the run's base key; the step
  number is folded in. `kl_fn(step)` gives the KL weight (default `config.kl.beta_end`).
  Each side's loss reaches its optimizer as `value` (for optax.contrib.reduce_on_plateau)."""
  adv_fn = adv_weight_fn(config)
  txs = {"generator": optax.with_extra_args_support(tx_gen),
         "discriminator": optax.with_extra_args_support(tx_disc)}

  def step(state, batch, rng):
    keys = jax.random.split(jax.random.fold_in(rng, state["step"]), 4)
    rngs = dict(zip(("dropout", "sample", "vq"), keys[:3]))
    grads, metrics, gen_loss = vaegan_grads(
        model, state["params"], batch, rngs, keys[3], config=config,
        kl_weight=_kl_weight(kl_fn, state["step"], config), adv_weight=adv_fn(state["step"]))
    losses = {"generator": gen_loss, "discriminator": metrics["loss_d"]}
    params, opt = {}, {}
    for side, tx in txs.items():
      updates, opt[side] = tx.update(grads[side], state[_OPT[side]], state["params"][side],
                                     value=losses[side])
      params[side] = optax.apply_updates(state["params"][side], updates)
    return {"step": state["step"] + 1, "params": params, "opt_gen": opt["generator"],
            "opt_disc": opt["discriminator"]}, metrics

  return step
