"""The RAVE-style waveform VAE as a variant of the one trainer (`models.wave_vae`).

Data: a waveform store (`data.feature=waveform`, the clips themselves; bad files counted as in
every store). Two stages, both with one optimizer per side (`variants.base.SideOptimizers`)
and the step of `variants.waveform_gan`:

- 'representation' (`wave.representation_epochs`): encoder and decoder on
  `objective.mel_weight` x multi-resolution mel L1 + `objective.stft_weight` x multi-scale
  STFT distance (spectral convergence + log-magnitude L1 at `wave.stft_sizes`) + the KL
  weight (`kl.*` schedule) x the KL of the latent per frame, summed over dimensions;
- 'adversarial' (`wave.adversarial_epochs`): the encoder frozen, the decoder also on the
  vocoder's multi-period and multi-resolution discriminators (`objective.adv_weight`,
  `objective.fm_weight`, `objective.gan_loss`), the discriminators updated beside it.

The switch is a stage boundary, so a run stopped anywhere resumes on the right side of it
(checkpoints hold both optimizers). Validation scores the representation loss and the 80-band
mel L1 in dB of the reconstructions (`mel_l1_db`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvae.errors import ConfigError
from jaxvae.losses import divergence
from jaxvae.losses import reduce
from jaxvae.losses import spectral
from jaxvae.models import wave_vae as wave_lib
from jaxvae.variants import waveform_gan
from jaxvae.variants.base import Stage
from jaxvae.variants.base import Variant


def model_config(m) -> wave_lib.WaveVAEConfig:
  return wave_lib.WaveVAEConfig(
    bands=int(m.bands),
    channels=int(m.channels),
    ratios=tuple(int(r) for r in m.ratios),
    latent_dim=len(m.fsq_levels) if m.bottleneck == "fsq" else int(m.latent_dim),
    bottleneck=str(m.bottleneck),
    num_codes=int(m.num_codes),
    num_quantizers=int(m.num_quantizers),
    quantizer_dropout=float(m.quantizer_dropout),
    lookup_dim=int(m.lookup_dim),
    fsq_levels=tuple(int(v) for v in m.fsq_levels),
    kernel=int(m.kernel),
    dilations=tuple(int(d) for d in m.dilations),
    causal=bool(m.causal),
    pqmf_overlap=int(m.pqmf_overlap),
    **waveform_gan.discriminator_settings(m),
  )


def build(model, spec, dtype: str = "float32"):
  del spec
  return wave_lib.WaveVAE(model_config(model), jnp.dtype(dtype))


def _terms(y, y_hat, terms, mask, kl_weight, config, key=None):
  """The spectral loss plus the bottleneck's: kl_weight x the KL per latent frame (summed over
  its dimensions, averaged over frames) or, with `wave.regularizer` 'mmd', kl_weight x the
  MMD of the latent frames' samples to N(0, I) (RAVE's Wasserstein option; validation, which
  has no key, scores the posterior means); or a codec's quantizer loss."""
  o = config.objective
  sizes = tuple(int(n) for n in config.wave.stft_sizes)
  loss, metrics = spectral.generator_terms(
    y, y_hat, mask, config.data.sr, o.mel_weight, o.stft_weight, sizes
  )
  if "mu" in terms and str(config.wave.get("regularizer", "kl")) == "mmd":
    mu = terms["mu"]
    z = terms.get("z", mu).reshape(-1, mu.shape[-1])
    frames = jnp.repeat(mask.astype(jnp.float32), mu.shape[1])
    key = jax.random.PRNGKey(0) if key is None else key
    mmd = divergence.mmd_to_normal(z, key, frames)
    loss = loss + kl_weight * mmd
    return loss, metrics | {"mmd": mmd, "kl_weight": jnp.asarray(kl_weight, jnp.float32)}
  if "mu" in terms:
    kl = divergence.gaussian_kl(terms["mu"], terms["logvar"])
    kl = reduce.masked_mean(jnp.mean(jnp.sum(kl, -1), -1), mask)
    loss = loss + kl_weight * kl
    return loss, metrics | {"kl": kl, "kl_weight": jnp.asarray(kl_weight, jnp.float32)}
  vq_loss = terms["vq_loss"].astype(jnp.float32)
  metrics |= {"vq_loss": vq_loss, "perplexity": terms["perplexity"].astype(jnp.float32)}
  if "levels_used" in terms:
    metrics["levels_used"] = terms["levels_used"]
  return loss + vq_loss, metrics


def objective(outputs, batch, *, kl_weight, config):
  """Validation: the representation loss on the posterior means' reconstructions, and the
  80-band mel L1 in dB (`mel_l1_db`)."""
  y, y_hat, mask = batch["x"][:, 0, :], outputs["wave"], batch["mask"]
  loss, metrics = _terms(y, y_hat, outputs, mask, kl_weight, config)
  mel_db = reduce.masked_mean(spectral.mel_l1_db(y, y_hat, config.data.sr), mask)
  return loss, {"loss": loss, "mel_l1_db": mel_db, **metrics}


def generator_loss(model, gen_params, batch, key, step, model_state, *, kl_fn, config):
  """The autoencoder's loss on the batch's clips, z sampled (`waveform_gan`'s contract)."""
  del model_state  # none: the waveform VAE keeps no state beside its parameters
  y = batch["x"][:, 0, :].astype(jnp.float32)
  y_hat, terms = model.apply(
    {"params": {"generator": gen_params}},
    y,
    key,
    method="autoencode",
    rngs={"vq": jax.random.fold_in(key, 1)},  # a codec's quantizer dropout
  )
  loss, metrics = _terms(
    y, y_hat, terms, batch["mask"], kl_fn(step), config, jax.random.fold_in(key, 2)
  )
  return loss, metrics, y, y_hat, batch["mask"]


def _step_maker(adversarial_stage: bool):
  def make(model, tx, objective_fn, kl_fn, config, default_step):
    del objective_fn, default_step
    return waveform_gan.make_train_step(
      model,
      tx,
      config,
      functools.partial(generator_loss, kl_fn=kl_fn, config=config),
      adversarial_stage=adversarial_stage,
      frozen=("encoder",) if adversarial_stage else (),
    )

  return make


def stages(config) -> list[Stage]:
  w = config.wave
  out = [
    Stage(
      "representation", int(w.representation_epochs), objective, make_train_step=_step_maker(False)
    )
  ]
  if int(w.adversarial_epochs) > 0:
    out.append(
      Stage("adversarial", int(w.adversarial_epochs), objective, make_train_step=_step_maker(True))
    )
  return out


def make_optimizer(config, total_steps, params, default):
  del total_steps, params
  return waveform_gan.make_optimizer(config, default)


def validate(config) -> None:
  d, m = config.data, config.model
  if d.feature != "waveform":
    raise ConfigError(
      f"config key 'data.feature' is '{d.feature}'; the waveform VAE trains on 'waveform' stores"
    )
  if d.normalize != "none":
    raise ConfigError(
      f"config key 'data.normalize' is '{d.normalize}'; the waveform VAE needs 'none'"
    )
  cfg = model_config(m)
  clip = int(round(float(d.seconds) * int(d.sr)))
  if clip < cfg.hop:
    raise ConfigError(
      f"config key 'data.seconds' is {d.seconds}: {clip} samples, shorter than one latent "
      f"frame ({cfg.hop} samples = model.bands x the product of model.ratios)"
    )
  if str(config.wave.regularizer) not in REGULARIZERS:
    raise ConfigError(
      f"config key 'wave.regularizer' is {config.wave.regularizer!r}; expected one of "
      f"{', '.join(REGULARIZERS)}"
    )
  if cfg.bottleneck not in BOTTLENECKS:
    raise ConfigError(
      f"config key 'model.bottleneck' is {m.bottleneck!r}; expected one of {', '.join(BOTTLENECKS)}"
    )
  if cfg.bottleneck == "lfq" and not 1 <= cfg.latent_dim <= 16:
    raise ConfigError(
      f"config key 'model.latent_dim' is {m.latent_dim}; model.bottleneck 'lfq' quantizes "
      "that many bits: expected 1..16"
    )
  if cfg.bands < 2 or cfg.bands & (cfg.bands - 1):
    raise ConfigError(f"config key 'model.bands' is {m.bands}; expected a power of 2 >= 2")
  waveform_gan.validate(config)


BOTTLENECKS = ("gaussian", "rvq", "fsq", "lfq")
REGULARIZERS = ("kl", "mmd")


def latent(config) -> str:
  return "gaussian" if config.model.bottleneck == "gaussian" else "codes"


VARIANT = Variant(
  build,
  objective,
  validate=validate,
  stages=stages,
  make_optimizer=make_optimizer,
  latent=latent,
  outputs=("waveform",),
)
