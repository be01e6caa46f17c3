"""Sampling audio models: latents from the prior (N(0, I), or the model's own prior such as
VaDE's GMM), decoded to normalized spectrograms, optionally conditioned on a label value;
and the one path from a model's (normalized) output back to feature units and to sound."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.audio import features
from jaxvae.audio import synthesis
from jaxvae.data import normalize as normalize_lib
from jaxvae.data import pipeline
from jaxvae.errors import ConfigError
from jaxvae.training import builder


def to_feature_units(x: np.ndarray, store, config) -> np.ndarray:
  """Model space (normalized) -> the store's units (dB or log1p of mel power)."""
  return normalize_lib.denormalize(
    np.asarray(x, np.float64), store.manifest["stats"], config.data.normalize
  )


PEAK_OUTPUT_DB = -6.0  # data.db_reference='peak': the peak of audio made from features, dBFS


def to_power(x: np.ndarray, stats: dict, config) -> np.ndarray:
  """Normalized mel features -> mel power (normalization and the dB / log1p scale undone;
  per-clip min-max is undone with the training set's mean range)."""
  units = normalize_lib.denormalize(np.asarray(x, np.float64), stats, config.data.normalize)
  if config.data.scale == "log1p":
    return np.expm1(np.maximum(units, 0.0))
  return np.asarray(features.db_to_power(units))


def features_to_audio(
  x: np.ndarray,
  store,
  config,
  n_iter: int = 32,
  inverse: str = "nnls",
  length: int | None = None,
  vocoder=None,
) -> np.ndarray:
  """One normalized mel spectrogram [n_mels, frames] -> waveform: through `vocoder` (a
  `sampling.vocoder.Vocoder` trained on these features) when given, else Griffin-Lim
  (`inverse`: how mel bands go back to linear frequency, see `audio.synthesis.mel_to_audio`)."""
  d = config.data
  if d.feature != "mel":
    raise ConfigError(
      f"config key 'data.feature' is '{d.feature}': only mel features can be turned back into audio"
    )
  builder.require_finite(x, "spectrograms")
  if vocoder is not None:
    vocoder.check_serves(config)
    units = to_feature_units(x, store, config).astype(np.float32)
    if length is None:
      length = d.hop_length * (units.shape[-1] - 1)
    audio = vocoder(units, length=length)
  else:
    audio = griffin_lim(
      to_power(x, store.manifest["stats"], config), config, n_iter, inverse, length
    )
  if d.get("db_reference", "absolute") == "peak":
    # Peak-referenced features hold no level (their loudest bin is 0 dB, far below real
    # audio's): the waveform is brought to a fixed peak instead.
    top = np.abs(audio).max()
    if top > 0:
      audio = audio * (10.0 ** (PEAK_OUTPUT_DB / 20.0) / top)
  return audio


def griffin_lim(power, config, n_iter: int = 32, inverse: str = "nnls", length=None):
  """Mel power [n_mels, frames] -> waveform with the run's STFT settings (the filterbank's
  inverse + Griffin-Lim, `audio.synthesis.mel_to_audio`)."""
  d = config.data
  return synthesis.mel_to_audio(
    power,
    sr=d.sr,
    n_fft=d.n_fft,
    hop_length=d.hop_length,
    n_iter=n_iter,
    inverse=inverse,
    length=length,
  )


def label_batch(label_values, config, condition: str | None, n: int) -> dict:
  """The label inputs of `n` examples: every label unknown (-1) except the model's
  conditioning label, set to `condition` when given. `label_values` maps each label to its
  values (a store's or a DataSpec's); a condition the model cannot take is a ConfigError."""
  batch = {"mask": jnp.broadcast_to(jnp.float32(1.0), (n,))}
  for name in label_values:
    batch[f"label_{name}"] = jnp.broadcast_to(jnp.int32(-1), (n,))
  label = config.model.get("cond_label", "")
  if condition is not None:
    if not label:
      raise ConfigError(
        f"condition {condition!r} given, but model '{config.model.name}' "
        "is not conditional (config key model.cond_label is empty)"
      )
    values = list(label_values[label])
    if condition not in values:
      raise ConfigError(
        f"condition {condition!r} is not a value of label '{label}'; "
        f"expected one of {', '.join(values)}"
      )
    batch[f"label_{label}"] = jnp.full((n,), values.index(condition), jnp.int32)
  return batch


def sample(job, state, config, condition: str | None, n: int, seed: int, gmm=None) -> np.ndarray:
  """Decodes z ~ the model's prior (N(0, I); VaDE: its mixture), or ~ `gmm` (a fitted
  `fit_posterior_gmm`), to normalized spectrograms [n, n_mels, frames]."""
  latent = job.variant.latent_kind(config)
  if latent not in ("gaussian", "mixture") or "features" not in job.variant.outputs:
    raise ConfigError(f"model '{config.model.name}' has no Gaussian prior to sample from")
  batch = label_batch(job.store.label_values, config, condition, n)
  variables = {"params": state.params, **state.model_state}
  key = jax.random.PRNGKey(seed)
  if gmm is not None:
    gmm.random_state = seed
    z = jnp.asarray(gmm.sample(n)[0], jnp.float32)
    z = z[np.random.default_rng(seed).permutation(n)]  # sklearn orders draws by component
  elif latent == "mixture":  # VaDE: its prior is the learned GMM
    z = job.model.apply(variables, n, method=job.model.sample_prior, rngs={"sample": key})
  else:
    z = jax.random.normal(key, (n, config.model.latent_dim))
  return np.asarray(_decoder(job.model)(variables, z, batch))


def fit_posterior_gmm(job, state, components: int, seed: int, means=None):
  """A post-hoc prior: a Gaussian mixture (full covariances, sklearn) fitted to the posterior
  means of the original training clips (as pythae's GMM sampler), to sample with
  `sample(..., gmm=)`. `means`: those posterior means when the caller has them already."""
  from sklearn.mixture import GaussianMixture

  if "latent_dim" not in job.config.model:
    raise ConfigError(f"model '{job.config.model.name}' has no Gaussian latent to fit a prior to")
  if means is None:
    train = pipeline.Examples(
      job.store,
      job.store.indices("train", augmented=False),
      job.config.data.normalize,
      job.train_examples.lyrics,
    )
    chunks = []
    for batch in pipeline.eval_batches(train, job.config.train.batch_size):
      mu = job.gather(job.forward(state, job.put(batch))["mu"])
      chunks.append(np.asarray(mu, np.float64)[batch["mask"] > 0])
    means = np.concatenate(chunks)
  mu = np.asarray(means, np.float64)
  k = max(1, min(int(components), len(mu) // 2))
  return GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(mu)


@functools.lru_cache(maxsize=16)
def _decoder(model):
  """The jitted decoder of `model` (one per model: every report of a run reuses it)."""
  return jax.jit(lambda v, z, b: model.apply(v, z, b, False, method=model.decode))
