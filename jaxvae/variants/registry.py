"""The one place that maps a variant name to its model builder and objective.

Adding a variant = a model module + an objective + a config + one `register` line below.
The trainer never learns a variant's name: it asks this registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

_REGISTRY: dict[str, "Variant"] = {}


def _no_checks(config) -> None:
  del config


@dataclasses.dataclass(frozen=True)
class Stage:
  """A phase of training with its own objective (VaDE: autoencoder pretraining, then joint).

  on_start: optional (state, model, batches, config) -> state, run once when the stage
    begins; `batches()` iterates the whole training split as device batches, in order.
  """
  name: str
  epochs: int
  objective: Callable[..., Any]
  on_start: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class Variant:
  """How to build and train one model family.

  build_model: (model_config, spec: DataSpec, dtype=str) -> flax.linen.Module.
  objective: (outputs, batch, *, kl_weight, config) -> (loss, metrics).
  validate: raises config_lib.ConfigError for variant-specific mistakes.
  data_init: optional (state, model, batches, config) -> state, run once on training data
    before the first step of a fresh run (k-means codebook init, ...).
  stages: optional config -> list[Stage]; by default one stage of `train.epochs` epochs
    with `objective` and `data_init`.
  lr_multipliers: optional (params, config) -> pytree of floats (same structure as params)
    scaling each parameter's update (VaDE's separate learning rate for the GMM).
  make_optimizer / make_train_step: optional replacements of the generic optimizer and
    step (the VAE-GAN's alternating generator / discriminator updates).
  """
  build_model: Callable[..., Any]
  objective: Callable[..., Any]
  validate: Callable[[Any], None] = _no_checks
  data_init: Callable[..., Any] | None = None
  stages: Callable[[Any], list[Stage]] | None = None
  lr_multipliers: Callable[..., Any] | None = None
  make_optimizer: Callable[..., Any] | None = None  # (config, total, params, default) -> tx
  make_train_step: Callable[..., Any] | None = None  # (model, tx, obj, kl_fn, config, default)

  def stage_list(self, config) -> list[Stage]:
    if self.stages is not None:
      return list(self.stages(config))
    return [Stage("train", config.train.epochs, self.objective, self.data_init)]


def register(name: str, variant: Variant) -> None:
  if name in _REGISTRY:
    raise ValueError(f"variant '{name}' is registered twice")
  _REGISTRY[name] = variant


def _load_builtin() -> None:
  if _REGISTRY:
    return
  # Imported here so that `import jaxvae.registry` stays cheap and cycle-free.
  from jaxvae.losses import spectral as losses
  from jaxvae.losses import multimodal as multimodal_objective
  from jaxvae.variants import music_transformer as music
  from jaxvae.losses import core as objectives
  from jaxvae.losses import vade as vade_objective
  from jaxvae.losses import vq as vq_objective
  from jaxvae.models import multimodal
  from jaxvae.models import spectral
  from jaxvae.models import vade
  from jaxvae.models import vae
  from jaxvae.models import vqvae
  register("basic_vae", Variant(vae.build_basic_vae, objectives.elbo))
  register("conv_vae", Variant(vae.build_conv_vae, objectives.elbo))
  register("spectral_vae", Variant(spectral.build_spectral_vae, losses.spectral_elbo,
                                   validate=losses.validate_spectral_objective))
  register("harmonic_vae", Variant(spectral.build_harmonic_vae, losses.spectral_elbo,
                                   validate=losses.validate_spectral_objective))
  register("music_transformer", Variant(music.build, music.objective, validate=music.validate,
                                        make_optimizer=music.make_optimizer,
                                        make_train_step=music.make_train_step))
  register("multimodal_vae", Variant(multimodal.build_multimodal_vae,
                                     multimodal_objective.multimodal_objective,
                                     validate=multimodal_objective.validate))
  register("vade", Variant(vade.build_vade, vade_objective.vade_objective, validate=vade.validate,
                           stages=vade.stages, lr_multipliers=vade.lr_multipliers))
  register("puzzle_vqvae", Variant(vqvae.build_puzzle_vqvae, vq_objective.vq_objective,
                                   data_init=vqvae.data_init))


def names() -> tuple[str, ...]:
  _load_builtin()
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Variant:
  _load_builtin()
  return _REGISTRY[name]
