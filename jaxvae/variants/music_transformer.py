"""The symbolic Transformer-VAE-GAN as a variant of the one trainer (the Transformer-VAE-GAN).

`config.stage` picks the model mode: 1 = causal transformer LM, 2 = hierarchical-latent VAE,
3 = VAE-GAN. Each stage trains in its own workdir, initialized from the previous one with
`--config.init_from=<previous workdir>` (weights only; the discriminator starts fresh).

Objectives: stage 1 is the mean next-token NLL; stages 2 and 3 add the KL (the GAN terms of
stage 3 live in its step). Token-level metrics (`nll`, `accuracy`) are means over the counted
target tokens of the batch (`jaxvae.losses.sequence`).

Stage 3 replaces the generic step with one generator and one discriminator update per step,
each side with its own optimizer state: the discriminator sees real windows as one-hot rows
and the generator's teacher-forced predictions as straight-through Gumbel-softmax samples, so
the forward pass shows it a sequence of ids (like the real one) while the backward pass
carries the adversarial gradient to the generator through the softmax (the original fed it
sampled ids: no gradient). `vaegan_train_step` applies `vaegan_grads` with an optimizer per
side; a single optax.multi_transform over `transformer.param_labels(params)` can apply them
as well.

GAN settings are read from `config.objective` with defaults: adv_weight (0.2),
adv_weight_start (= adv_weight) and adv_ramp_steps (0: constant), fm_weight (1.0),
r1_weight (1.0), gan_loss ('hinge' or 'ns'), disc_lr_scale (1.0); and `config.model.gumbel_tau`
(1.0). `objective.kl_scale` is described in `vae_objective`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxvae.errors import ConfigError
from jaxvae.losses import adversarial
from jaxvae.losses import divergence
from jaxvae.losses import sequence
from jaxvae.models import transformer
from jaxvae.symbolic.midi import PAD
from jaxvae.variants.base import SideOptimizers
from jaxvae.variants.base import Variant

STAGE_MODES = {1: "transformer", 2: "vae", 3: "vaegan"}


def mode_of(model_config) -> str:
  return STAGE_MODES[int(model_config.stage)]


def build(model_config, spec, dtype: str = "float32"):
  model_config = model_config.copy_and_resolve_references()
  with model_config.unlocked():
    model_config.mode = mode_of(model_config)
  return transformer.build_music_transformer(model_config, spec, dtype)


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


def _token_metrics(terms) -> dict[str, jax.Array]:
  return {"nll": terms["nll"], "ppl": jnp.exp(terms["nll"]), "accuracy": terms["accuracy"]}


def lm_objective(outputs, batch, *, kl_weight, config):
  """Stage 1: mean next-token NLL (nats per token)."""
  del kl_weight, config
  terms = sequence.token_terms(outputs["logits"], batch["tokens"], batch["mask"])
  return terms["nll"], {"loss": terms["nll"], **_token_metrics(terms)}


def vae_objective(outputs, batch, *, kl_weight, config):
  """Stage 2: NLL + kl_weight * KL, with `config.kl.free_bits` nats per latent dimension.

  `config.objective.kl_scale` (default 'per_token') divides the per-window KL by the number
  of target tokens per window, so that kl_weight = 1 is the exact negative ELBO per token;
  'per_example' adds the per-window KL to the per-token NLL as it is.
  Reports `kl` (nats per window) and its share per latent level (`kl_global`, ...).
  """
  mask = batch["mask"]
  terms = sequence.token_terms(outputs["logits"], batch["tokens"], mask)
  kl_penalized, kl = divergence.free_bits_kl(
    outputs["mu"], outputs["logvar"], mask, config.kl.free_bits
  )
  scale = config.objective.get("kl_scale", "per_token")
  per = terms["tokens_per_example"] if scale == "per_token" else 1.0
  loss = terms["nll"] + jnp.asarray(kl_weight, jnp.float32) * kl_penalized / per
  metrics = {
    "loss": loss,
    **_token_metrics(terms),
    "kl": kl,
    "kl_weight": jnp.asarray(kl_weight, jnp.float32),
  }
  cfg = transformer.config_from(config.model)
  for name, part in transformer.latent_levels(cfg).items():
    metrics[f"kl_{name}"] = divergence.free_bits_kl(
      outputs["mu"][:, part], outputs["logvar"][:, part], mask, 0.0
    )[1]
  return loss, metrics


def objective(outputs, batch, *, kl_weight, config):
  """Token NLL (stage 1) or NLL + KL (stages 2 and 3: the GAN terms live in the step)."""
  if mode_of(config.model) == "transformer":
    return lm_objective(outputs, batch, kl_weight=kl_weight, config=config)
  return vae_objective(outputs, batch, kl_weight=kl_weight, config=config)


# ---------------------------------------------------------------------------------------------
# Config checks
# ---------------------------------------------------------------------------------------------


def validate_model(config) -> None:
  """The model fields of a full config (`transformer.config_from`), as one ConfigError."""
  try:
    transformer.config_from(config.model)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None


def validate(config) -> None:
  if int(config.model.stage) not in STAGE_MODES:
    raise ConfigError(f"config key 'stage' is {config.model.stage!r}; expected 1, 2 or 3")
  if int(config.model.stage) == 3 and config.dtype == "float16":
    # The alternating generator/discriminator step has no dynamic loss scaling.
    raise ConfigError(
      "config key 'dtype' is 'float16', which stage 3 (VAE-GAN) does not "
      "support; use bfloat16 or float32"
    )
  validate_model(config)


# ---------------------------------------------------------------------------------------------
# The VAE-GAN step (`outs` is the list that `MusicTransformer.discriminate` returns)
# ---------------------------------------------------------------------------------------------


def real_and_fake(logits, batch, rng, tau: float):
  """(real one-hot, fake ST-Gumbel sample), both [B, T-1, V] and zero at PAD targets."""
  weights = (batch["tokens"][:, 1:] != PAD).astype(jnp.float32)[..., None]
  real = jax.nn.one_hot(batch["tokens"][:, 1:], logits.shape[-1], dtype=jnp.float32)
  fake = adversarial.gumbel_softmax(logits, rng, tau)
  return real * weights, fake * weights


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
    start + (end - start) * jnp.clip(step.astype(jnp.float32) / ramp, 0.0, 1.0)
  )


def _gan_kind(config) -> str:
  kind = config.objective.get("gan_loss", "hinge")
  if kind not in adversarial.GAN_LOSSES:
    raise ValueError(f"config key 'objective.gan_loss' is {kind!r}: expected 'hinge' or 'ns'")
  return kind


def _disc_fn(model, disc_params, mask):
  return lambda x: model.apply(
    {"params": {"discriminator": disc_params}}, x, mask, method="discriminate"
  )


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
  adv = adversarial.generator_adv_loss(fake_outs, batch["mask"], _gan_kind(config))
  fm = adversarial.feature_matching_loss(real_outs, fake_outs, batch["mask"])
  return adv, fm, real, fake, weights


def generator_terms(model, params, batch, rngs, gumbel_rng, *, kl_weight, adv_weight, config):
  """Generator loss = VAE loss + adv_weight * adversarial + fm_weight * feature matching.

  Returns (loss, (metrics, real, fake, target_weights)).
  """
  outputs = model.apply({"params": params}, batch, train=True, rngs=rngs)
  vae_loss, metrics = vae_objective(outputs, batch, kl_weight=kl_weight, config=config)
  adv, fm, real, fake, weights = adversarial_terms(
    model, params["discriminator"], outputs["logits"], batch, gumbel_rng, config
  )
  loss = vae_loss + adv_weight * adv + float(config.objective.get("fm_weight", 1.0)) * fm
  metrics = dict(
    metrics,
    vae_loss=vae_loss,
    loss=loss,
    adv_g=adv,
    fm=fm,
    adv_weight=jnp.asarray(adv_weight, jnp.float32),
  )
  return loss, (metrics, real, fake, weights)


def discriminator_terms(model, disc_params, real, fake, weights, batch, config):
  """Discriminator loss + r1_weight * R1 on the real windows; returns (loss, metrics)."""
  obj = config.objective
  mask = batch["mask"]
  disc = _disc_fn(model, disc_params, weights)
  real_outs, fake_outs = disc(real), disc(fake)
  adv = adversarial.discriminator_loss(real_outs, fake_outs, mask, _gan_kind(config))
  r1_weight = float(obj.get("r1_weight", 1.0))
  r1 = adversarial.r1_penalty(disc, real, mask) if r1_weight > 0 else jnp.float32(0.0)
  loss = adv + r1_weight * r1
  return loss, {
    "loss_d": loss,
    "adv_d": adv,
    "r1": r1,
    "d_real": adversarial.mean_logit(real_outs, mask),
    "d_fake": adversarial.mean_logit(fake_outs, mask),
  }


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
    return generator_terms(
      model,
      {"generator": gen_params, "discriminator": disc},
      batch,
      rngs,
      gumbel_rng,
      kl_weight=kl_weight,
      adv_weight=adv_weight,
      config=config,
    )

  (loss, (g_metrics, real, fake, weights)), g_grads = jax.value_and_grad(gen_loss, has_aux=True)(
    gen
  )
  fake = jax.lax.stop_gradient(fake)
  (_, d_metrics), d_grads = jax.value_and_grad(
    lambda p: discriminator_terms(model, p, real, fake, weights, batch, config), has_aux=True
  )(disc)
  metrics = {
    **g_metrics,
    **d_metrics,
    "grad_norm_g": optax.tree.norm(g_grads),
    "grad_norm_d": optax.tree.norm(d_grads),
  }
  return {"generator": g_grads, "discriminator": d_grads}, metrics, loss


def _kl_weight(kl_fn, step, config):
  return kl_fn(step) if kl_fn is not None else jnp.float32(config.kl.beta_end)


_OPT = {"generator": "opt_gen", "discriminator": "opt_disc"}  # optimizer state per side


def init_vaegan_state(params, tx_gen, tx_disc) -> dict:
  """The state of `vaegan_train_step`: {'step', 'params': {'generator', 'discriminator'},
  'opt_gen', 'opt_disc'}."""
  return {
    "step": jnp.int32(0),
    "params": params,
    "opt_gen": tx_gen.init(params["generator"]),
    "opt_disc": tx_disc.init(params["discriminator"]),
  }


def vaegan_train_step(model, tx_gen, tx_disc, config, kl_fn: Callable | None = None):
  """Returns the pure `step(state, batch, rng) -> (state, metrics)` of stage 3, with one
  optimizer per side (state from `init_vaegan_state`). `rng` is the run's base key; the step
  number is folded in. `kl_fn(step)` gives the KL weight (default `config.kl.beta_end`).
  Each side's loss reaches its optimizer as `value` (for optax.contrib.reduce_on_plateau)."""
  adv_fn = adv_weight_fn(config)
  txs = {
    "generator": optax.with_extra_args_support(tx_gen),
    "discriminator": optax.with_extra_args_support(tx_disc),
  }

  def step(state, batch, rng):
    keys = jax.random.split(jax.random.fold_in(rng, state["step"]), 4)
    rngs = dict(zip(("dropout", "sample", "vq"), keys[:3]))
    grads, metrics, gen_loss = vaegan_grads(
      model,
      state["params"],
      batch,
      rngs,
      keys[3],
      config=config,
      kl_weight=_kl_weight(kl_fn, state["step"], config),
      adv_weight=adv_fn(state["step"]),
    )
    losses = {"generator": gen_loss, "discriminator": metrics["loss_d"]}
    params, opt = {}, {}
    for side, tx in txs.items():
      updates, opt[side] = tx.update(
        grads[side], state[_OPT[side]], state["params"][side], value=losses[side]
      )
      params[side] = optax.apply_updates(state["params"][side], updates)
    return {
      "step": state["step"] + 1,
      "params": params,
      "opt_gen": opt["generator"],
      "opt_disc": opt["discriminator"],
    }, metrics

  return step


# ---------------------------------------------------------------------------------------------
# Trainer hooks
# ---------------------------------------------------------------------------------------------


def make_optimizer(config, total_steps, params, default):
  """Stage 3: the trainer's optimizer for the generator, the same scaled by
  `objective.disc_lr_scale` for the discriminator (optax transformations hold no state, so
  one serves both sides); else the trainer's optimizer."""
  del total_steps, params
  if mode_of(config.model) != "vaegan":
    return default
  disc_scale = float(config.objective.get("disc_lr_scale", 1.0))
  return SideOptimizers(default, optax.chain(default, optax.scale(disc_scale)))


def make_train_step(model, tx, objective_fn, kl_fn, config, default_step):
  """Stage 3: the alternating VAE-GAN step on the trainer's state; else the generic step."""
  del objective_fn
  if mode_of(config.model) != "vaegan":
    return default_step
  gan_step = vaegan_train_step(model, tx.tx_gen, tx.tx_disc, config, kl_fn)

  def train_step(state, batch):
    inner = {"step": state.step, "params": state.params, **state.opt_state}
    new, metrics = gan_step(inner, batch, state.rng)
    metrics = dict(metrics, loss=metrics.get("loss", metrics.get("loss_g")))
    return state.replace(
      step=new["step"],
      params=new["params"],
      opt_state={"opt_gen": new["opt_gen"], "opt_disc": new["opt_disc"]},
    ), metrics

  return train_step


def latent(config) -> str:
  """Stage 1 is a language model; stages 2 and 3 have a Gaussian latent per piece window."""
  return "none" if mode_of(config.model) == "transformer" else "gaussian"


VARIANT = Variant(
  build,
  objective,
  validate=validate,
  make_optimizer=make_optimizer,
  make_train_step=make_train_step,
  data_kind="midi",
  latent=latent,
  outputs=("tokens",),
)
