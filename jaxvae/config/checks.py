"""Checks of the values every variant relies on; each mistake is one ConfigError naming the key.

`choice`, `positive` and `integer` are shared with the variants' own checks.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_collections

from jaxvae.config import base
from jaxvae.config.base import get_path
from jaxvae.errors import ConfigError

# Keys whose value is one of a fixed set.
CHOICES = {
  "dtype": base.DTYPES,
  "train.best_direction": base.BEST_DIRECTIONS,
  "train.optimizer": base.OPTIMIZERS,
  "train.lr_schedule": base.LR_SCHEDULES,
  "kl.schedule": base.KL_SCHEDULES,
  "data.layout": base.LAYOUTS,
  "data.kind": base.KINDS,
  "data.on_error": base.ON_ERROR,
  "data.normalize": base.NORMALIZATIONS,
  "data.feature": base.FEATURES,
  "data.example_mode": base.EXAMPLE_MODES,
  "data.scale": base.SCALES,
  "data.db_reference": base.DB_REFERENCES,
  "model.conv_transpose": base.CONV_TRANSPOSE,
  "data.download.archive": ("", "full", "midi"),
  "train.report_thread": base.REPORT_THREAD,
  "eval.cluster_space": base.CLUSTER_SPACES,
}


def choice(config, key: str, allowed: Iterable[str]) -> None:
  value = get_path(config, key)
  allowed = tuple(allowed)
  if value not in allowed:
    raise ConfigError(f"config key '{key}' is {value!r}; expected one of {', '.join(allowed)}")


def positive(config, key: str, allow_zero: bool = False) -> None:
  value = get_path(config, key)
  if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
    wanted = "a number >= 0" if allow_zero else "a number > 0"
    raise ConfigError(f"config key '{key}' is {value!r}; expected {wanted}")


def integer(config, key: str, low: int) -> None:
  value = get_path(config, key)
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(f"config key '{key}' is {value!r}; expected an integer >= {low}")


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys every run has; raises ConfigError naming the key. A variant's own keys are
  checked by its module (`jaxvae.variants.registry.check`)."""
  embedding = str(config.eval.embedding)
  if embedding != "bands" and not all(embedding.partition(":")[::2]):
    raise ConfigError(
      f"config key 'eval.embedding' is {embedding!r}; expected 'bands' or 'module:function'"
    )
  for key, allowed in CHOICES.items():
    choice(config, key, allowed)
  for key in ("train.lr", "data.seconds"):
    positive(config, key)
  for key, low in (
    ("train.epochs", 1),
    ("train.batch_size", 1),
    ("data.sr", 1),
    ("data.n_fft", 1),
    ("data.hop_length", 1),
    ("data.n_mels", 1),
    ("train.grad_accum_steps", 1),
    ("train.log_every_steps", 1),
    ("eval.num_generated", 1),
    ("eval.iw_samples", 1),
    ("eval.num_reconstructed", 1),
    ("eval.embedding_bands", 1),
    ("eval.num_samples", 2),
    ("eval.gmm_components", 1),
    ("eval.iw_chunk", 1),
    ("train.keep_checkpoints", 1),
    ("data.read_threads", 1),
    ("train.max_nonfinite_steps", 0),
    ("train.checkpoint_every_steps", 0),
    ("train.image_every_epochs", 0),
    ("train.patience", 0),
    ("train.max_steps", 0),
    ("train.eval_every_steps", 0),
    ("train.num_devices", 0),
    ("data.download.retries", 0),
    ("data.download.size", 0),
  ):
    integer(config, key, low)
  if "latent_dim" in config.model:
    integer(config, "model.latent_dim", 1)
  integer(config, "generate.interpolation_steps", 2)
  positive(config, "data.download.timeout")
  positive(config, "generate.seconds", allow_zero=True)
  if base.parse_duration(config.train.max_runtime) is None:
    raise ConfigError(
      f"config key 'train.max_runtime' is {config.train.max_runtime!r}; expected seconds "
      "(0: no budget) or a duration such as '90m', '4h', '1:30:00'"
    )
  unknown = [n for n in base.writer_names(config) if n not in base.WRITERS]
  if unknown:
    raise ConfigError(
      f"config key 'train.writers' names {', '.join(map(repr, unknown))}; expected names from "
      f"{', '.join(base.WRITERS)}"
    )
  share = config.train.max_nonfinite_share
  if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
    raise ConfigError(
      f"config key 'train.max_nonfinite_share' is {share!r}; expected a share in (0, 1] "
      "(1: never stop for it)"
    )
  for key in (
    "train.clip_norm",
    "kl.beta_start",
    "kl.beta_end",
    "train.weight_decay",
    "kl.free_bits",
    "train.min_delta",
  ):
    positive(config, key, allow_zero=True)
  d = config.data
  if d.db_reference == "peak" and d.feature == "mel" and d.scale != "db":
    raise ConfigError(
      f"config key 'data.db_reference' is 'peak', which applies to dB features; data.scale "
      f"is {d.scale!r}: set data.scale='db' or data.db_reference='absolute'"
    )
  if not 0.0 <= config.data.val_fraction < 1.0:
    raise ConfigError(
      f"config key 'data.val_fraction' is {config.data.val_fraction!r}; "
      "expected a fraction in [0, 1)"
    )
