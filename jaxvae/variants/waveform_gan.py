"""The train step of the two-sided waveform families (the vocoder, the waveform VAE): a
generator update on the family's own loss, in an adversarial stage plus the discriminators'
adversarial and feature-matching terms, and then a discriminator update; one optimizer per
side (`variants.base.SideOptimizers`), an optional EMA of the generator's weights, and parts
of the generator that a stage keeps frozen (the waveform VAE's encoder in its adversarial
phase).

A family gives `generator_loss(model, gen_params, batch, key, step, model_state) -> (loss,
metrics, y, y_hat, mask)` (`model_state`: the state's non-parameter collections, e.g. a frozen
run's weights, `training.frozen`): its loss before any adversarial term, the real and the
generated waveforms [B, samples] the discriminators compare, and the examples' mask. Its
model has a `discriminate` method (the discriminator outputs of waveforms,
`losses.adversarial`'s format) and keeps its parameters as {'generator': ...,
'discriminator': ...}.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxvae.errors import ConfigError
from jaxvae.losses import adversarial
from jaxvae.variants.base import SideOptimizers


def make_train_step(
  model,
  tx: SideOptimizers,
  config,
  generator_loss: Callable,
  *,
  adversarial_stage: bool,
  frozen: tuple[str, ...] = (),
  ema_decay: float = 0.0,
):
  """`train_step(state, batch) -> (state, metrics)`. `frozen`: top-level keys of the
  generator's parameters this step leaves unchanged (no gradient reaches them and their
  update is zero, so their optimizer state stands still too)."""
  o = config.objective
  kind = str(o.gan_loss)
  txs = {
    "generator": optax.with_extra_args_support(tx.tx_gen),
    "discriminator": optax.with_extra_args_support(tx.tx_disc),
  }

  def disc(params, y):
    return model.apply({"params": {"discriminator": params}}, y, method="discriminate")

  def train_step(state, batch):
    key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 7)
    gen, dis = state.params["generator"], state.params["discriminator"]

    def total_loss(gen_params):
      if frozen:  # the frozen parts as constants: no gradient flows into them
        gen_params = {
          k: jax.lax.stop_gradient(v) if k in frozen else v for k, v in gen_params.items()
        }
      loss, metrics, y, y_hat, mask = generator_loss(
        model, gen_params, batch, key, state.step, state.model_state
      )
      if adversarial_stage:
        real, fake = disc(dis, y), disc(dis, y_hat)
        adv = adversarial.generator_adv_loss(fake, mask, kind)
        fm = adversarial.feature_matching_loss(real, fake, mask)
        loss = loss + o.adv_weight * adv + o.fm_weight * fm
        metrics = metrics | {"adv_g": adv, "feature_matching": fm}
      return loss, (metrics, y, y_hat, mask)

    (loss, (metrics, y, y_hat, mask)), g_grads = jax.value_and_grad(total_loss, has_aux=True)(gen)
    opt = dict(state.opt_state)
    new_gen, opt["opt_gen"] = _generator_update(
      txs["generator"], gen, opt["opt_gen"], g_grads, loss, frozen
    )
    params = {"generator": new_gen, "discriminator": dis}
    if "ema_gen" in opt:
      opt["ema_gen"] = _ema(opt["ema_gen"], new_gen, state.step, ema_decay)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(g_grads))
    if adversarial_stage:
      fake = jax.lax.stop_gradient(y_hat)
      params["discriminator"], opt["opt_disc"], d_metrics = _discriminator_update(
        txs["discriminator"], disc, dis, opt["opt_disc"], (y, fake, mask), kind
      )
      metrics |= d_metrics
    return state.replace(step=state.step + 1, params=params, opt_state=opt), metrics

  return train_step


def _generator_update(tx, params, opt_state, grads, loss, frozen: tuple[str, ...]):
  """(new params, new optimizer state) of one generator step; the top-level keys in `frozen`
  get a zero update and keep their optimizer state."""
  updates, new_opt = tx.update(grads, opt_state, params, value=loss)
  if frozen:
    updates = {k: jax.tree.map(jnp.zeros_like, v) if k in frozen else v for k, v in updates.items()}
    new_opt = _keep_frozen(new_opt, opt_state, frozen)
  return optax.apply_updates(params, updates), new_opt


def _ema(average, params, step, ema_decay: float):
  """The generator's moving average after `step`, warmed up as TensorFlow's
  ExponentialMovingAverage with num_updates: early on it follows the weights instead of
  remembering the random start."""
  t = step.astype(jnp.float32)
  decay = jnp.minimum(float(ema_decay), (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, average, params)


def _discriminator_update(tx, disc, params, opt_state, batch, kind: str):
  """One discriminator step on real and (stopped) generated waveforms `batch` = (y, fake,
  mask): (new params, new optimizer state, metrics)."""
  y, fake, mask = batch

  def discriminator_loss(d_params):
    real_outs, fake_outs = disc(d_params, y), disc(d_params, fake)
    loss_d = adversarial.discriminator_loss(real_outs, fake_outs, mask, kind)
    logits = (adversarial.mean_logit(real_outs, mask), adversarial.mean_logit(fake_outs, mask))
    return loss_d, logits

  (loss_d, (d_real, d_fake)), grads = jax.value_and_grad(discriminator_loss, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params, value=loss_d)
  metrics = {
    "loss_d": loss_d,
    "grad_norm_d": optax.tree.norm(grads),
    "d_real": d_real,
    "d_fake": d_fake,
  }
  return optax.apply_updates(params, updates), opt_state, metrics


def _keep_frozen(new_state, old_state, frozen: tuple[str, ...]):
  """An optimizer state whose per-parameter leaves under `frozen` keep their old values (a
  leaf is per-parameter when it lies on a path through a frozen key)."""

  def pick(path, new, old):
    keys = {getattr(p, "key", None) for p in path}
    return old if keys & set(frozen) else new

  return jax.tree_util.tree_map_with_path(pick, new_state, old_state)


def validate(config) -> None:
  """The keys this step reads: `objective.gan_loss`, and a dtype it supports (no float16:
  its two optimizers have no dynamic loss scaling)."""
  if str(config.objective.gan_loss) not in adversarial.GAN_LOSSES:
    raise ConfigError(
      f"config key 'objective.gan_loss' is {config.objective.gan_loss!r}; expected one of "
      f"{', '.join(adversarial.GAN_LOSSES)}"
    )
  if config.dtype == "float16":
    raise ConfigError(
      "config key 'dtype' is 'float16', which the two-optimizer waveform step does not "
      "support; use bfloat16 or float32"
    )


def discriminator_settings(m) -> dict:
  """The discriminators' shapes from a `model` config group (the vocoder's keys)."""
  return {
    "periods": tuple(int(p) for p in m.periods),
    "period_channels": tuple(int(c) for c in m.period_channels),
    "resolutions": tuple(int(n) for n in m.resolutions),
    "resolution_channels": int(m.resolution_channels),
  }


def make_optimizer(config, default, ema: bool = False) -> SideOptimizers:
  """The trainer's optimizer for the generator, the same scaled by `objective.disc_lr_scale`
  for the discriminators; with `ema`, an EMA of the generator's weights too."""
  scale = float(config.objective.disc_lr_scale)
  return SideOptimizers(default, optax.chain(default, optax.scale(scale)), ema=ema)
