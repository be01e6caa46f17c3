"""Another run's trained model as a frozen function inside this run's step.

A family may read what a trained model makes from its inputs instead of the inputs
themselves: a vocoder fine-tuned on a VAE's reconstructions (`vocoder.inputs_from`), as
HiFi-GAN is fine-tuned on an acoustic model's outputs, learns the VAE's smooth spectrograms
instead of real ones. `Variant.reads_run(config)` names that run's config key and workdir;
`builder.build` loads it here (`load`) and hands the family's builder `reads=` a
`FrozenFunction`: `apply(variables, features)`, features in the store's units `[B, n_mels,
frames]` (dB or log1p mel, unnormalized) -> the decoding of their posterior mean in the same
units, and the variables' shapes. The variables themselves live in the run's state
(`model_state['frozen']['run']`, `install`): arguments of the compiled steps, not constants,
and checkpointed, so a resume and `--mode=eval` read the weights the run started from even if
that VAE trains on (its workdir must still load: every build reads its model, statistics and
checkpoint), and `init_from` never replaces them with the source run's.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxvae import errors
from jaxvae.data import normalize as normalize_lib
from jaxvae.data.spec import DataSpec
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.training.state import init_variables
from jaxvae.variants import registry

COLLECTION = "frozen"  # model_state[COLLECTION][NAME]: the frozen run's variables
NAME = "run"


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenFunction:
  """What a model that reads a frozen run holds: `apply(variables, features) -> features`
  and the shapes of `variables` (its state variable's initial zeros)."""

  apply: Callable[[Any, jax.Array], jax.Array]
  shapes: Any


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenRun:
  function: FrozenFunction
  variables: Any  # the restored weights
  workdir: str
  step: int


def install(state, run: FrozenRun):
  """`state` with the frozen run's weights in its model state (replacing the zeros the
  model's init made)."""
  model_state = dict(state.model_state)
  model_state[COLLECTION] = {NAME: run.variables}
  return state.replace(model_state=model_state)


def _run_file(workdir: str, key: str) -> dict:
  try:
    return writer_lib.read_run(workdir)
  except errors.CheckpointError as e:
    raise errors.ConfigError(f"config key '{key}': {e}") from None


def load(workdir: str, key: str) -> FrozenRun:
  """The audio VAE trained in `workdir` (its best checkpoint, else its latest, every leaf
  restored) as a `FrozenRun`; `key` is the config key that named it (every error names it).
  Gaussian or mixture latents on mel features, unconditional, normalized 'global', 'band'
  or 'none'; a multimodal model encodes the audio alone (lyrics absent, as `jaxvae.load`'s
  `encode` without lyrics)."""
  info = _run_file(workdir, key)
  try:
    config = registry.config_from_dict(info["config"], workdir)
  except (errors.ConfigError, KeyError) as e:
    raise errors.ConfigError(f"config key '{key}': the run in '{workdir}': {e}") from None
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
  if config.model.get("cond_label", ""):
    raise errors.ConfigError(
      f"config key '{key}': '{workdir}' is conditional on '{config.model.cond_label}'; a "
      "vocoder's clips carry no label to give it: use an unconditional VAE"
    )
  method = str(config.data.normalize)
  if method not in ("global", "band", "none"):
    raise errors.ConfigError(
      f"config key '{key}': '{workdir}' normalizes data.normalize='{method}' (per example); "
      "expected 'global', 'band' or 'none'"
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
  shapes = jax.eval_shape(lambda: init_variables(module, example, jax.random.PRNGKey(0)))
  params, model_state, step = checkpoint.restore_weights(
    workdir, checkpoint.weights_template(shapes), config.model.name, with_step=True, key=key
  )
  variables = {"params": params, **model_state}
  apply = functools.partial(_reconstruct, module, spec, data["stats"], method, key, workdir)
  var_shapes = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables)
  return FrozenRun(FrozenFunction(apply, var_shapes), variables, workdir, step)


def _reconstruct(module, spec: DataSpec, stats, method, key, workdir, variables, features):
  shape = tuple(spec.input_shape)
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
  variables = jax.lax.stop_gradient(variables)
  mu, _ = module.apply(variables, batch, False, method=module.encode)
  out = module.apply(variables, mu, batch, False, method=module.decode)
  out = out.astype(jnp.float32).reshape(features.shape)
  return jax.lax.stop_gradient(normalize_lib.denormalize(out, stats, method))
