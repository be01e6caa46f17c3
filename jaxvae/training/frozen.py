"""Another run's trained model as a frozen function inside this run's step.

A family may read what a trained model makes from its inputs instead of the inputs
themselves: a vocoder fine-tuned on a VAE's reconstructions (`vocoder.inputs_from`), as
HiFi-GAN is fine-tuned on an acoustic model's outputs, learns the VAE's smooth spectrograms
instead of real ones. `Variant.reads_run(config)` names that run's workdir; `builder.build`
loads it here and hands the family `reconstruction(workdir)`: a pure function of features in
the store's units `[B, n_mels, frames]` (dB or log1p mel, unnormalized) -> the decoding of
their posterior mean in the same units. The weights are constants of the compiled step (not
part of the state or its checkpoints); the run is read again when a resumed run builds its step,
so it must stay where it was.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from jaxvae import errors
from jaxvae.data import normalize as normalize_lib
from jaxvae.data.spec import DataSpec
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.training.state import init_variables
from jaxvae.variants import registry


def _run_file(workdir: str, key: str) -> dict:
  path = os.path.join(workdir, writer_lib.MARKER)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.ConfigError(
      f"config key '{key}' is '{workdir}': not a jaxvae workdir (no {writer_lib.MARKER})"
    ) from None
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f"config key '{key}': cannot read '{path}': {e}") from None


def reconstruction(workdir: str, key: str):
  """The function `features -> reconstructed features` of the audio VAE trained in
  `workdir` (its best checkpoint, else its latest); `key` is the config key that named it
  (every error names it). Gaussian or mixture latents on mel features only; labels read
  as unknown and lyrics as absent (the audio alone is encoded, as `jaxvae.load`'s `encode`
  without a condition)."""
  info = _run_file(workdir, key)
  config = registry.config_from_dict(info["config"], workdir)
  variant = registry.get(config.model.name)
  data = info.get("data", {})
  if (
    config.data.get("kind", "audio") != "audio"
    or config.data.feature != "mel"
    or variant.waveform_from(config)
    or not variant.has_prior(config)
  ):
    raise errors.ConfigError(
      f"config key '{key}': '{workdir}' holds a '{config.model.name}' run "
      f"(data.feature '{config.data.feature}'); expected an audio VAE of mel features with a "
      "Gaussian or mixture latent"
    )
  if "stats" not in data or "shape" not in data:
    raise errors.ConfigError(
      f"config key '{key}': the run file of '{workdir}' has no feature statistics (a run from "
      "before they were saved); train it again"
    )
  spec = DataSpec(
    input_shape=tuple(data["shape"]),
    labels={k: tuple(v) for k, v in data.get("label_values", {}).items()},
    lyrics_dim=int(data.get("lyrics_dim", 0)),
  )
  module = variant.build_model(config.model, spec, dtype=config.dtype)
  example = {k: jnp.asarray(v) for k, v in spec.example_batch(1).items()}
  template = checkpoint.weights_template(
    jax.eval_shape(lambda: init_variables(module, example, jax.random.PRNGKey(0)))
  )
  try:
    params, model_state = checkpoint.restore_weights(workdir, template, config.model.name)
  except errors.ConfigError as e:
    message = str(e).replace("config key 'init_from': ", "")
    raise errors.ConfigError(f"config key '{key}': {message}") from None
  variables = {"params": params, **model_state}
  stats, method = data["stats"], str(config.data.normalize)
  shape = spec.input_shape

  def reconstruct(features):
    if tuple(features.shape[1:]) != shape:
      raise errors.ConfigError(
        f"config key '{key}': the model in '{workdir}' reads features {list(shape)}, this run "
        f"makes {list(features.shape[1:])} (set data.seconds as that run's)"
      )
    n = features.shape[0]
    batch = {"x": normalize_lib.normalize_features(features, stats, method), "mask": jnp.ones(n)}
    for name in spec.labels:
      batch[f"label_{name}"] = jnp.full((n,), -1, jnp.int32)
    if spec.lyrics_dim:
      batch["lyrics"] = jnp.zeros((n, spec.lyrics_dim), jnp.float32)
      batch["lyrics_mask"] = jnp.zeros((n,), jnp.float32)
    mu, _ = module.apply(variables, batch, False, method=module.encode)
    out = module.apply(variables, mu, batch, False, method=module.decode)
    out = out.astype(jnp.float32).reshape(features.shape)
    return jax.lax.stop_gradient(normalize_lib.denormalize(out, stats, method))

  return reconstruct
