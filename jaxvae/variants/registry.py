"""The one table that maps a variant name (`config.model.name`) to its family's `Variant`.

Adding a variant = a family module in this folder (model builder, objective, checks) + a
config + one row in `VARIANTS`. The trainer never learns a variant's name: it asks `get`.
"""

from __future__ import annotations

import ml_collections

from jaxvae.config import checks
from jaxvae.config import loading
from jaxvae.data import sources
from jaxvae.errors import ConfigError
from jaxvae.variants import audio_vae
from jaxvae.variants import multimodal
from jaxvae.variants import music_transformer
from jaxvae.variants import puzzle_vq
from jaxvae.variants import spectral
from jaxvae.variants import vade
from jaxvae.variants import vocoder
from jaxvae.variants import wave_vae
from jaxvae.variants.base import Stage
from jaxvae.variants.base import Variant

# Stage and Variant are part of this module's interface: the trainer types its runs with them.
__all__ = [
  "Stage",
  "Variant",
  "VARIANTS",
  "names",
  "get",
  "check",
  "load_config",
  "config_from_dict",
]

VARIANTS: dict[str, Variant] = {
  "basic_vae": audio_vae.BASIC,
  "conv_vae": audio_vae.CONV,
  "spectral_vae": spectral.SPECTRAL,
  "harmonic_vae": spectral.HARMONIC,
  "music_transformer": music_transformer.VARIANT,
  "multimodal_vae": multimodal.VARIANT,
  "vade": vade.VARIANT,
  "puzzle_vqvae": puzzle_vq.VARIANT,
  "vocoder": vocoder.VARIANT,
  "wave_vae": wave_vae.VARIANT,
}


def names() -> tuple[str, ...]:
  return tuple(sorted(VARIANTS))


def get(name: str) -> Variant:
  return VARIANTS[name]


def check(config) -> None:
  """`model.name` is a known variant and the variant's own keys are right; raises
  ConfigError naming the key. `jaxvae.config` checks the keys every run has."""
  checks.choice(config, "model.name", names())
  variant = VARIANTS[config.model.name]
  sources.of_config(config)  # data.sources, each source's keys
  if config.data.kind != variant.data_kind:
    raise ConfigError(
      f"config key 'data.kind' is {config.data.kind!r}; model '{config.model.name}' reads "
      f"{variant.data_kind!r} data"
    )
  if config.data.feature == "waveform" and "waveform" not in variant.outputs:
    raise ConfigError(
      f"config key 'data.feature' is 'waveform' (the clips themselves, a vocoder's data); "
      f"model '{config.model.name}' reads mel or mfcc features"
    )
  variant.validate(config)


def load_config(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """`jaxvae.config.loading.load` followed by `check`: the config a run can use."""
  config = loading.load(spec, overrides)
  variant = VARIANTS.get(config.model.name)
  if variant is not None and variant.resolve is not None:
    variant.resolve(config)
  check(config)
  return config


def config_from_dict(raw: dict, workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved (its run file's JSON), checked and locked; a ConfigError names
  the workdir."""
  config = ml_collections.ConfigDict(_tuples(raw))
  try:
    check(config)
  except ConfigError as e:
    raise ConfigError(f"the config saved in '{workdir}': {e}") from None
  return config.lock()


def _tuples(value):
  """JSON lists back to the tuples configs use."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value
