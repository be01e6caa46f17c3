"""What a variant is: the `Variant` record the trainer runs, and the `Stage`s it trains in.

Kept apart from the table in `registry` so that each family module can build its record
without importing the table that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any


def _no_checks(config) -> None:
  del config


def _no_likelihood(config) -> None:
  del config


def _no_parts(config) -> dict[str, tuple[int, int]]:
  del config
  return {}


def _gaussian(config) -> str:
  del config
  return "gaussian"


# What a variant can declare (see `Variant`).
DATA_KINDS = ("audio", "midi")
LATENTS = ("gaussian", "mixture", "codes", "none")
OUTPUTS = ("features", "lyrics", "tokens", "waveform")


@dataclasses.dataclass(frozen=True)
class Stage:
  """A phase of training with its own objective (VaDE: autoencoder pretraining, then joint).

  on_start: optional (state, model, batches, config) -> state, run once when the stage
    begins; `batches()` iterates the whole training split as device batches, in order.
  make_train_step: optional, this stage's replacement of the step (the signature of
    `Variant.make_train_step`, which it takes precedence over): a vocoder's spectral stage
    updates the generator alone, its adversarial stage both sides.
  """

  name: str
  epochs: int
  objective: Callable[..., Any]
  on_start: Callable[..., Any] | None = None
  make_train_step: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class Variant:
  """How to build and train one model family.

  build_model: (model_config, spec: DataSpec, dtype=str) -> flax.linen.Module.
  objective: (outputs, batch, *, kl_weight, config) -> (loss, metrics).
  validate: raises errors.ConfigError for variant-specific mistakes.
  data_init: optional (state, model, batches, config) -> state, run once on training data
    before the first step of a fresh run (k-means codebook init, ...).
  stages: optional config -> list[Stage]; by default one stage of `train.epochs` epochs
    with `objective` and `data_init`.
  lr_multipliers: optional (params, config) -> pytree of floats (same structure as params)
    scaling each parameter's update (VaDE's separate learning rate for the GMM).
  make_optimizer / make_train_step: optional replacements of the generic optimizer and
    step (the VAE-GAN's alternating generator / discriminator updates).
  likelihood: config -> the decoder likelihood the objective implies ('gaussian',
    'bernoulli'; `jaxvae.evaluators.likelihood`), or None where the objective is not a
    normalized likelihood (no importance-weighted NLL is reported then).
  latent_parts: config -> {part: (start, stop)}, the latent's subspaces that one input
    alone infers (the multimodal 'split' fusion: audio and lyrics), which eval also
    clusters one by one; {} where the latent is one fused whole.

  What the family is, declared once (the API class, eval, generate, export and the reports
  read these instead of probing the model or the config):
  data_kind: what it reads, 'audio' (feature stores) or 'midi' (token stores); `data.kind`
    must agree (`registry.check`).
  latent: config -> 'gaussian' (a posterior with an N(0, I) prior: sampled, interpolated,
    clustered, scored by IWAE), 'mixture' (the same with a learned Gaussian-mixture prior,
    VaDE's `sample_prior` / `log_prior`), 'codes' (a vector-quantized code grid) or 'none'
    (a language model: the MIDI transformer's stage 1).
  outputs: what it decodes: 'features' (normalized spectrograms: reports, Griffin-Lim,
    reconstruction scores), 'lyrics' (lyrics embeddings: cross-modal coherence), 'tokens',
    'waveform' (audio: a vocoder's, or a waveform VAE's; `waveform_from` tells which).
  resolve: optional, fills in config keys derived from elsewhere when the config is loaded,
    before the checks (a vocoder's `features_from`: another run's feature settings).
  reads_run: optional config -> (config key, workdir) or None: a trained audio VAE whose
    reconstructions the model reads (`jaxvae.training.frozen`); the builder loads it, passes
    `build_model` its function as `reads=` and puts its weights in the state's model state
    (collection 'frozen'; a vocoder's `inputs_from`).
  """

  build_model: Callable[..., Any]
  objective: Callable[..., Any]
  validate: Callable[[Any], None] = _no_checks
  data_init: Callable[..., Any] | None = None
  stages: Callable[[Any], list[Stage]] | None = None
  lr_multipliers: Callable[..., Any] | None = None
  make_optimizer: Callable[..., Any] | None = None  # (config, total, params, default) -> tx
  make_train_step: Callable[..., Any] | None = None  # (model, tx, obj, kl_fn, config, default)
  likelihood: Callable[[Any], str | None] = _no_likelihood
  latent_parts: Callable[[Any], dict[str, tuple[int, int]]] = _no_parts
  data_kind: str = "audio"
  latent: Callable[[Any], str] = _gaussian
  outputs: tuple[str, ...] = ("features",)
  resolve: Callable[[Any], None] | None = None
  reads_run: Callable[[Any], tuple[str, str] | None] | None = None

  def __post_init__(self):
    assert self.data_kind in DATA_KINDS, self.data_kind
    assert set(self.outputs) <= set(OUTPUTS), self.outputs

  def latent_kind(self, config) -> str:
    """`latent(config)`, one of LATENTS."""
    kind = self.latent(config)
    assert kind in LATENTS, kind
    return kind

  def waveform_from(self, config) -> str:
    """What a model that makes waveforms makes them from: 'latent' (the waveform VAE or codec:
    encode, decode, sample), 'features' (a vocoder: a model's mel in, audio out), or '' (it
    makes no waveform: its audio, if any, comes from a vocoder or Griffin-Lim)."""
    if "waveform" not in self.outputs:
      return ""
    return "features" if self.latent_kind(config) == "none" else "latent"

  def has_prior(self, config) -> bool:
    """A Gaussian latent with a prior to sample from, interpolate in and score against."""
    return self.latent_kind(config) in ("gaussian", "mixture")

  def stage_list(self, config) -> list[Stage]:
    if self.stages is not None:
      return list(self.stages(config))
    return [Stage("train", config.train.epochs, self.objective, self.data_init)]


class SideOptimizers:
  """One optimizer per side of a GAN, created like any optimizer (`init(params)` of
  {'generator', 'discriminator'} params) into {'opt_gen', 'opt_disc'}: what a two-sided
  variant's `make_optimizer` returns and its step reads (`tx_gen`, `tx_disc`). With `ema`,
  the state also holds 'ema_gen', an exponential moving average of the generator's
  parameters that the step updates (checkpointed with the rest)."""

  def __init__(self, tx_gen, tx_disc, ema: bool = False):
    self.tx_gen, self.tx_disc, self.ema = tx_gen, tx_disc, ema

  def init(self, params):
    state = {
      "opt_gen": self.tx_gen.init(params["generator"]),
      "opt_disc": self.tx_disc.init(params["discriminator"]),
    }
    if self.ema:
      state["ema_gen"] = params["generator"]
    return state
