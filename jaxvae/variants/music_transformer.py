"""The symbolic Transformer-VAE-GAN as a variant of the one trainer (seed 001).

`config.stage` picks the model mode: 1 = causal transformer LM, 2 = hierarchical-latent VAE,
3 = VAE-GAN. Each stage trains in its own workdir, initialized from the previous one with
`--config.init_from=<previous workdir>` (weights only; the discriminator starts fresh). Stage
3 replaces the generic step with alternating generator / discriminator updates, each side
with its own optimizer state.
"""

from __future__ import annotations

import optax

from jaxvae.training import optim
from jaxvae.losses import sequence as seq_objectives
from jaxvae.models import transformer

STAGE_MODES = {1: "transformer", 2: "vae", 3: "vaegan"}


def mode_of(model_config) -> str:
  return STAGE_MODES[int(model_config.stage)]


def build(model_config, spec, dtype: str = "float32"):
  model_config = model_config.copy_and_resolve_references()
  with model_config.unlocked():
    model_config.mode = mode_of(model_config)
  return transformer.build_music_transformer(model_config, spec, dtype)


def objective(outputs, batch, *, kl_weight, config):
  """Token NLL (stage 1) or NLL + KL (stages 2 and 3: the GAN terms live in the step)."""
  if mode_of(config.model) == "transformer":
    return seq_objectives.lm_objective(outputs, batch, kl_weight=kl_weight, config=config)
  return seq_objectives.vae_objective(outputs, batch, kl_weight=kl_weight, config=config)


def validate(config) -> None:
  from jaxvae.config.loading import ConfigError
  if int(config.model.stage) not in STAGE_MODES:
    raise ConfigError(f"config key 'stage' is {config.model.stage!r}; expected 1, 2 or 3")
  if config.data.kind != "midi":
    raise ConfigError("config key 'data.kind' must be 'midi' for model 'music_transformer'")
  if int(config.model.stage) == 3 and config.dtype == "float16":
    # The alternating generator/discriminator step has no dynamic loss scaling.
    raise ConfigError("config key 'dtype' is 'float16', which stage 3 (VAE-GAN) does not "
                      "support; use bfloat16 or float32")
  transformer.validate(config)


class _GanOptimizer:
  """Optimizer states of both GAN sides, created like any optimizer's (`init(params)`)."""

  def __init__(self, tx_gen, tx_disc):
    self.tx_gen, self.tx_disc = tx_gen, tx_disc

  def init(self, params):
    return {"opt_gen": self.tx_gen.init(params["generator"]),
            "opt_disc": self.tx_disc.init(params["discriminator"])}


def make_optimizer(config, total_steps, params, default):
  if mode_of(config.model) != "vaegan":
    return default
  disc_scale = float(config.objective.get("disc_lr_scale", 1.0))
  return _GanOptimizer(optim.optimizer(config, total_steps),
                       optax.chain(optim.optimizer(config, total_steps),
                                   optax.scale(disc_scale)))


def make_train_step(model, tx, objective_fn, kl_fn, config, default_step):
  """Stage 3: the alternating VAE-GAN step on the trainer's state; else the generic step."""
  if mode_of(config.model) != "vaegan":
    return default_step
  gan_step = seq_objectives.vaegan_train_step(model, tx.tx_gen, tx.tx_disc, config, kl_fn)

  def train_step(state, batch):
    inner = {"step": state.step, "params": state.params, **state.opt_state}
    new, metrics = gan_step(inner, batch, state.rng)
    metrics = dict(metrics, loss=metrics.get("loss", metrics.get("loss_g")))
    return state.replace(step=new["step"], params=new["params"],
                         opt_state={"opt_gen": new["opt_gen"], "opt_disc": new["opt_disc"]}), metrics

  return train_step
