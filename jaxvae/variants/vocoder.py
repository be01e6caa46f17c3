"""The neural vocoder as a variant of the one trainer: log-mel features -> waveform.

Data: a waveform store (`data.feature=waveform`: the dataset's clips themselves, bad files
counted as in every store). Each train step computes the features of the whole clips inside
the step with the feature store's own function (`data.featurize.mel_db`) and the run's
`data.*` settings, so the vocoder sees exactly what the VAEs' stores hold (a clip's dB
reference and floor included), then takes `vocoder.segment_frames` + 1 frames of each at a
random offset (on device, from the step's key) and the samples they are centred on.
Validation vocodes whole clips.

Two stages, both with one optimizer per side (`variants.base.SideOptimizers`; with
`vocoder.ema_decay` > 0 also an EMA of the generator's weights, which inference and
`--mode=eval` use; validation during training scores the raw weights):
- 'spectral' (`vocoder.spectral_epochs`): the generator alone on
  `objective.mel_weight` x multi-resolution mel L1 + `objective.stft_weight` x multi-resolution
  STFT distance (spectral convergence + log-magnitude L1);
- 'adversarial' (`vocoder.adversarial_epochs`): adds the multi-period and multi-resolution
  discriminators (`objective.gan_loss` 'hinge' or 'ns'), `objective.adv_weight` x the
  generator's adversarial loss and `objective.fm_weight` x feature matching; the
  discriminator steps at the same time (`objective.disc_lr_scale` x the learning rate).

`--config.vocoder.features_from=WORKDIR` copies an audio run's feature settings (`data.sr`,
`n_fft`, `hop_length`, `n_mels`, `scale`, `db_reference`) into the vocoder's config when it is
loaded (`resolve`), so they never need matching by hand.

`--config.vocoder.inputs_from=VAE_WORKDIR` fine-tunes for one model (HiFi-GAN's practice with
an acoustic model): the clips' features go through that VAE (posterior mean, decoded) before
the generator sees them, in training and validation, and the target stays the original clip;
it implies `features_from` and that run's `data.seconds`. Start from a vocoder trained on real
features with `--config.init_from=VOCODER_WORKDIR`.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp

from jaxvae.errors import ConfigError
from jaxvae.losses import reduce
from jaxvae.losses import spectral
from jaxvae.models import vocoder as vocoder_lib
from jaxvae.variants import waveform_gan
from jaxvae.variants.base import SideOptimizers
from jaxvae.variants.base import Stage
from jaxvae.variants.base import Variant

# The data keys that make a mel what it is: a vocoder and the model it serves must agree.
FEATURE_KEYS = ("sr", "n_fft", "hop_length", "n_mels", "scale", "db_reference")


def feature_settings(config) -> dict:
  """The feature settings of a config (an audio VAE's, or the mel a vocoder reads)."""
  d = config.data
  return {k: d.get(k, "absolute") if k == "db_reference" else d[k] for k in FEATURE_KEYS}


def model_config(m) -> vocoder_lib.VocoderConfig:
  """The model group (its feature keys refer to `data.*`'s, `configs/vocoder.py`)."""
  return vocoder_lib.VocoderConfig(
    dim=int(m.dim),
    intermediate=int(m.intermediate),
    layers=int(m.layers),
    kernel=int(m.kernel),
    **waveform_gan.discriminator_settings(m),
    head_fft=int(m.head_fft) or 4 * int(m.hop_length),
    sr=int(m.sr),
    n_fft=int(m.n_fft),
    hop_length=int(m.hop_length),
    n_mels=int(m.n_mels),
    scale=str(m.scale),
    db_reference=str(m.db_reference),
  )


def build(model, spec, dtype: str = "float32", reads=None):
  """`reads`: the frozen reconstruction of `vocoder.inputs_from`'s VAE
  (`training.frozen.FrozenFunction`), given by the builder (`reads_run`), or None."""
  del spec
  return vocoder_lib.Vocoder(model_config(model), jnp.dtype(dtype), reads)


def reads_run(config) -> tuple[str, str] | None:
  """('vocoder.inputs_from', its workdir) when the vocoder learns a VAE's reconstructions."""
  source = str(config.vocoder.get("inputs_from", ""))
  return ("vocoder.inputs_from", source) if source else None


def _segment(config) -> int:
  return int(config.vocoder.segment_frames) * int(config.data.hop_length)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def spectral_terms(y, y_hat, mask, config) -> tuple[jax.Array, dict]:
  """The generator's spectral loss and its parts (batch means over real examples)."""
  o = config.objective
  return spectral.generator_terms(y, y_hat, mask, config.data.sr, o.mel_weight, o.stft_weight)


def objective(outputs, batch, *, kl_weight, config):
  """Validation: the generator's spectral loss on whole clips, and the headline figures:
  80-band mel L1 in dB (`mel_l1_db`) and spectral convergence at STFT sizes 512/1024/2048."""
  del kl_weight
  y, y_hat, mask = batch["x"][:, 0, :], outputs["wave"], batch["mask"]
  loss, metrics = spectral_terms(y, y_hat, mask, config)
  mel_db = reduce.masked_mean(spectral.mel_l1_db(y, y_hat, config.data.sr), mask)
  return loss, {"loss": loss, "mel_l1_db": mel_db, **metrics}


# ---------------------------------------------------------------------------------------------
# The step: one generator update, and in the adversarial stage one discriminator update
# ---------------------------------------------------------------------------------------------


def random_crop(y, mel, frames: int, hop: int, key):
  """`frames` + 1 consecutive frames of each clip's features mel [B, n_mels, F] at a random
  offset, and the `frames * hop` samples of y [B, samples] from the first one's centre (frame
  f of centred frames is centred on sample f * hop, as the generator's output lays them)."""
  last = min(mel.shape[-1] - frames - 1, (y.shape[-1] - frames * hop) // hop)
  offsets = jax.random.randint(key, (y.shape[0],), 0, last + 1)
  take_mel = lambda m, f: jax.lax.dynamic_slice_in_dim(m, f, frames + 1, axis=-1)
  take_wave = lambda row, f: jax.lax.dynamic_slice(row, (f * hop,), (frames * hop,))
  return jax.vmap(take_wave)(y, offsets), jax.vmap(take_mel)(mel, offsets)


def generator_loss(model, gen_params, batch, key, step, model_state, *, config):
  """The spectral loss of the generator on random crops of the batch's clips (their
  features computed whole in the step, as the store computes them): (loss, metrics, y,
  y_hat, mask) for `waveform_gan.make_train_step`."""
  del step
  cfg, frames = model.cfg, int(config.vocoder.segment_frames)
  clips = batch["x"][:, 0, :].astype(jnp.float32)
  # As the store computes it (and through the VAE of vocoder.inputs_from, whose weights are
  # the model state's 'frozen' collection, when set).
  mel = model.apply(dict(model_state), clips, method="features")
  mel = jax.lax.stop_gradient(mel)
  y, mel = random_crop(clips, mel, frames, cfg.hop_length, key)
  y_hat = model.apply({"params": {"generator": gen_params}}, mel, method="vocode")
  y_hat = vocoder_lib.fit_length(y_hat, _segment(config))
  loss, metrics = spectral_terms(y, y_hat, batch["mask"], config)
  return loss, metrics, y, y_hat, batch["mask"]


def _train_step(model, tx: SideOptimizers, config, adversarial_stage: bool):
  return waveform_gan.make_train_step(
    model,
    tx,
    config,
    functools.partial(generator_loss, config=config),
    adversarial_stage=adversarial_stage,
    ema_decay=float(config.vocoder.get("ema_decay", 0.0)),
  )


def make_optimizer(config, total_steps, params, default):
  """The trainer's optimizer for the generator, the same scaled by `objective.disc_lr_scale`
  for the discriminators."""
  del total_steps, params
  return waveform_gan.make_optimizer(
    config, default, ema=float(config.vocoder.get("ema_decay", 0.0)) > 0
  )


def _step_maker(adversarial_stage: bool):
  def make(model, tx, objective_fn, kl_fn, config, default_step):
    del objective_fn, kl_fn, default_step
    return _train_step(model, tx, config, adversarial_stage)

  return make


def stages(config) -> list[Stage]:
  v = config.vocoder
  out = [Stage("spectral", int(v.spectral_epochs), objective, make_train_step=_step_maker(False))]
  if int(v.adversarial_epochs) > 0:
    out.append(
      Stage("adversarial", int(v.adversarial_epochs), objective, make_train_step=_step_maker(True))
    )
  return out


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def resolve(config) -> None:
  """`vocoder.features_from=WORKDIR`: that run's feature settings replace `data.*`'s;
  `vocoder.inputs_from=WORKDIR` does the same with its VAE and also takes its `data.seconds`,
  the clip length that VAE reads (a `features_from` naming another run is refused)."""
  inputs = str(config.vocoder.get("inputs_from", ""))
  features = str(config.vocoder.features_from)
  if inputs and features and os.path.abspath(features) != os.path.abspath(inputs):
    raise ConfigError(
      f"config keys 'vocoder.features_from' ('{features}') and 'vocoder.inputs_from' "
      f"('{inputs}') name different runs; inputs_from alone sets the features"
    )
  source = inputs or features
  if not source:
    return
  key = "vocoder.inputs_from" if inputs else "vocoder.features_from"
  path = os.path.join(source, "jaxvae_run.json")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)["config"]["data"]
    settings = {k: data[k] for k in FEATURE_KEYS if k != "db_reference"}
    settings["db_reference"] = data.get("db_reference", "absolute")
    if inputs:
      settings["seconds"] = data["seconds"]
  except (OSError, ValueError, KeyError) as e:
    raise ConfigError(
      f"config key '{key}' is '{source}': cannot read its run file {path} ({e})"
    ) from None
  if data.get("kind", "audio") != "audio" or data.get("feature") != "mel":
    raise ConfigError(
      f"config key '{key}': the run in '{source}' reads data.kind="
      f"'{data.get('kind', 'audio')}', data.feature='{data.get('feature')}'; a vocoder serves "
      "audio models of mel features"
    )
  with config.unlocked():
    for k, v in settings.items():
      config.data[k] = v


def validate(config) -> None:
  d, v = config.data, config.vocoder
  if d.feature != "waveform":
    raise ConfigError(
      f"config key 'data.feature' is '{d.feature}'; the vocoder trains on 'waveform' stores "
      "(its mel is computed in the step from data.sr, n_fft, hop_length, n_mels, scale)"
    )
  if d.normalize != "none":
    raise ConfigError(f"config key 'data.normalize' is '{d.normalize}'; the vocoder needs 'none'")
  head = int(config.model.head_fft) or 4 * int(d.hop_length)
  if head % int(d.hop_length):
    raise ConfigError(
      f"config key 'model.head_fft' is {head}; it must be a multiple of data.hop_length "
      f"({d.hop_length})"
    )
  if not 0.0 <= float(v.get("ema_decay", 0.0)) < 1.0:
    raise ConfigError(f"config key 'vocoder.ema_decay' is {v.ema_decay}; expected 0 <= it < 1")
  if int(v.segment_frames) < 2:
    raise ConfigError(f"config key 'vocoder.segment_frames' is {v.segment_frames}; expected >= 2")
  clip = int(round(float(d.seconds) * int(d.sr)))
  if _segment(config) > clip:
    raise ConfigError(
      f"config key 'vocoder.segment_frames' is {v.segment_frames} ({_segment(config)} samples "
      f"at hop {d.hop_length}), longer than the clips (data.seconds {d.seconds}: {clip} samples)"
    )
  waveform_gan.validate(config)


VARIANT = Variant(
  build,
  objective,
  validate=validate,
  stages=stages,
  make_optimizer=make_optimizer,
  latent=lambda config: "none",
  outputs=("waveform",),
  resolve=resolve,
  reads_run=reads_run,
)
