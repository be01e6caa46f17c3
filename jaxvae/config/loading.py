"""Configs: the shared base, loading `configs/<name>.py[:preset]`, overrides and validation.

A config file defines `get_config(arg=None)` that starts from `base_config()`, sets what its
variant needs, applies the preset named by `arg` (e.g. `small`) and returns the dict locked.
Every mistake a user can make in a config is reported as one `ConfigError` line naming the key.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any, Iterable

import ml_collections

from jaxvae.errors import ConfigError  # noqa: F401 - also used as config_lib.ConfigError

DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "warmup_cosine", "plateau")
KL_SCHEDULES = ("constant", "linear", "cyclical")
LAYOUTS = ("demo", "gtzan", "maestro", "speech_commands", "folder", "manifest", "chorales")
KINDS = ("audio", "midi")
ON_ERROR = ("silence", "skip", "raise")
NORMALIZATIONS = ("global", "minmax", "none")
FEATURES = ("mel", "mfcc")
EXAMPLE_MODES = ("pad_crop", "segment")
SCALES = ("db", "log1p")



def base_config() -> ml_collections.ConfigDict:
  """Keys every config has; variants override and add under `model` and `objective`."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dtype = "float32"  # compute dtype; parameters stay float32.
  c.init_from = ""  # a workdir or checkpoint dir: load its weights, fresh optimizer.
  c.distributed = False  # call jax.distributed.initialize() (multi-host).

  c.model = ml_collections.ConfigDict()
  c.model.name = "conv_vae"
  # How conv decoders compute strided transposed convolutions (jaxvae/models/layers.py):
  # 'auto' (a matmul form on CPU, lax.conv_transpose elsewhere), 'matmul' or 'lax'.
  c.model.conv_transpose = "auto"

  c.objective = ml_collections.ConfigDict()
  c.objective.recon = "mse"  # 'mse' (Gaussian) or 'bce' (inputs in [0, 1]).

  c.kl = ml_collections.ConfigDict()
  c.kl.schedule = "linear"
  c.kl.beta_start = 0.0
  c.kl.beta_end = 1.0
  c.kl.steps = 0  # ramp length in steps; 0 means use `epochs`.
  c.kl.epochs = 20.0
  c.kl.cycles = 4  # cyclical: number of ramps over training.
  c.kl.free_bits = 0.0  # nats per latent dimension below which KL is not penalized.

  c.data = ml_collections.ConfigDict()
  c.data.kind = "audio"  # 'audio' (feature store) or 'midi' (token store)
  c.data.layout = "demo"
  c.data.root = ""
  c.data.cache_dir = ""  # '' means $JAXVAE_CACHE or ~/.cache/jaxvae.
  c.data.sr = 22050
  c.data.n_fft = 2048
  c.data.hop_length = 512
  c.data.n_mels = 128
  c.data.feature = "mel"
  c.data.n_mfcc = 40
  c.data.scale = "db"
  c.data.seconds = 30.0
  c.data.example_mode = "pad_crop"
  c.data.segment_hop_seconds = 0.0  # 0 means non-overlapping segments.
  c.data.normalize = "global"
  c.data.on_error = "silence"
  c.data.min_seconds = 0.0
  c.data.val_fraction = 0.2
  c.data.split_seed = 0
  c.data.audio_column = "audio"
  c.data.lyrics_column = "lyrics"
  c.data.label_columns = ""  # comma-separated; '' means every label column.
  c.data.lyrics_embeddings = ""  # path to a lyrics store made by tools/embed_lyrics.py.
  c.data.read_threads = 2
  c.data.prefetch = 4
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.copies = 0  # K augmented copies of each training clip in the store; 0: none.
  c.data.augment.seed = 0
  c.data.augment.p_pitch = 0.5
  c.data.augment.max_semitones = 2.0
  c.data.augment.p_stretch = 0.5
  c.data.augment.max_stretch = 0.1  # rate uniform in 1 +- this.
  c.data.augment.p_noise = 0.5
  c.data.augment.noise_snr_db = (20.0, 40.0)
  c.data.augment.p_gain = 0.5
  c.data.augment.gain_db = (-6.0, 6.0)
  c.data.augment.spec_mask = False  # time/frequency masking inside the jitted train step.
  c.data.augment.time_masks = 2
  c.data.augment.time_width = 0.1  # fraction of frames, per band (max).
  c.data.augment.freq_masks = 2
  c.data.augment.freq_width = 0.1  # fraction of mel bins, per band (max).
  c.data.midi = ml_collections.ConfigDict()
  c.data.midi.seq_len = 512
  c.data.midi.overlap = 128
  c.data.midi.transpose = ()  # extra transposed copies of training pieces, in semitones
  c.data.midi.tempo_stretch = ()  # extra time-stretched copies of training pieces (1.1: slower)
  c.data.midi.velocity_jitter = 0  # > 0: copies with each VELOCITY moved by up to this many bins
  c.data.midi.velocity_copies = 1  # how many velocity-jittered copies (when velocity_jitter > 0)
  c.data.midi.augment_seed = 0  # seeds the velocity jitter (builds are reproducible)
  c.data.midi.chorales = 350  # data.layout 'chorales': how many of music21's Bach chorales
  c.data.demo = ml_collections.ConfigDict()
  c.data.demo.clips_per_class = 20  # per (language, genre) pair.
  c.data.demo.seed = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.plots = "tsne,umap"  # 2-D latent plots in --mode=eval (umap needs umap-learn).
  c.eval.num_generated = 8  # token models: pieces generated to compare with the data

  c.generate = ml_collections.ConfigDict()  # token models (--mode=generate)
  c.generate.num_tokens = 1024
  c.generate.temperature = 1.0
  c.generate.top_k = 0
  c.generate.top_p = 0.95
  c.generate.interpolation_steps = 5  # --interpolate=a.mid,b.mid: points from a to b

  c.tune = ml_collections.ConfigDict()
  c.tune.space = ""  # e.g. "train.lr=loguniform(1e-5, 1e-2); model.latent_dim=int(8, 64)"
  c.tune.num_trials = 20
  c.tune.epochs = 5  # training epochs per trial
  c.tune.pruner_startup_trials = 3
  c.tune.pruner_warmup_epochs = 1

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 100
  c.train.batch_size = 32
  c.train.optimizer = "adam"
  c.train.lr = 1e-3
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.min_lr_ratio = 0.0
  c.train.weight_decay = 0.0
  c.train.plateau_factor = 0.5  # lr_schedule 'plateau': scale applied on a plateau,
  c.train.plateau_patience = 10  # after this many non-improving loss readings,
  c.train.plateau_accumulation = 1  # each the mean over this many steps.
  c.train.clip_norm = 0.5
  c.train.grad_accum_steps = 1
  c.train.patience = 15  # early stopping on validation loss; 0 disables.
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 0  # 0: at the end of every epoch only.
  c.train.keep_checkpoints = 3
  c.train.image_every_epochs = 5  # report every N epochs (and after the first); 0: never
  c.train.report_samples = True  # prior samples in the report
  c.train.report_audio = True  # Griffin-Lim audio of a reconstruction and a sample
  c.train.report_tsne = False  # t-SNE of validation latents (a few seconds each time)
  c.train.num_devices = 0  # devices in the data-parallel mesh; 0 means all local devices.
  c.train.max_steps = 0  # 0: no limit beyond epochs (useful for smoke runs).
  c.train.loss_scale_init = 2.0**15  # float16 dynamic loss scaling start.
  # A step whose loss or gradient norm is non-finite is skipped (counted as
  # train/nonfinite_steps); this many in a row stop the run (exit 1). 0: skip, never stop.
  c.train.max_nonfinite_steps = 25
  return c


def _get_path(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _choice(config, key: str, allowed: Iterable[str]) -> None:
  value = _get_path(config, key)
  allowed = tuple(allowed)
  if value not in allowed:
    raise ConfigError(
        f"config key '{key}' is {value!r}; expected one of {', '.join(allowed)}")


def _positive(config, key: str, allow_zero: bool = False) -> None:
  value = _get_path(config, key)
  if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
    wanted = "a number >= 0" if allow_zero else "a number > 0"
    raise ConfigError(f"config key '{key}' is {value!r}; expected {wanted}")


def _integer(config, key: str, low: int) -> None:
  value = _get_path(config, key)
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(f"config key '{key}' is {value!r}; expected an integer >= {low}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the values every variant relies on; raises ConfigError naming the key."""
  from jaxvae.variants import registry  # late: registry imports models, which import config_lib.
  _choice(config, "model.name", registry.names())
  _choice(config, "dtype", DTYPES)
  _choice(config, "train.optimizer", OPTIMIZERS)
  _choice(config, "train.lr_schedule", LR_SCHEDULES)
  _choice(config, "kl.schedule", KL_SCHEDULES)
  _choice(config, "data.layout", LAYOUTS)
  _choice(config, "data.kind", KINDS)
  _choice(config, "data.on_error", ON_ERROR)
  _choice(config, "data.normalize", NORMALIZATIONS)
  _choice(config, "data.feature", FEATURES)
  _choice(config, "data.example_mode", EXAMPLE_MODES)
  _choice(config, "data.scale", SCALES)
  _choice(config, "model.conv_transpose", ("auto", "matmul", "lax"))
  for key in ("train.lr", "data.seconds"):
    _positive(config, key)
  for key, low in (("train.epochs", 1), ("train.batch_size", 1), ("data.sr", 1),
                   ("data.n_fft", 1), ("data.hop_length", 1), ("data.n_mels", 1),
                   ("train.grad_accum_steps", 1), ("train.log_every_steps", 1),
                   ("eval.num_generated", 1), ("train.keep_checkpoints", 1),
                   ("data.read_threads", 1), ("train.max_nonfinite_steps", 0),
                   ("train.checkpoint_every_steps", 0), ("train.image_every_epochs", 0),
                   ("train.patience", 0), ("train.max_steps", 0), ("train.num_devices", 0)):
    _integer(config, key, low)
  if "latent_dim" in config.model:
    _integer(config, "model.latent_dim", 1)
  if config.generate.interpolation_steps < 2:
    raise ConfigError("config key 'generate.interpolation_steps' is "
                      f"{config.generate.interpolation_steps!r}; expected an integer >= 2")
  for key in ("train.clip_norm", "kl.beta_start", "kl.beta_end", "train.weight_decay",
              "kl.free_bits"):
    _positive(config, key, allow_zero=True)
  if not 0.0 <= config.data.val_fraction < 1.0:
    raise ConfigError(f"config key 'data.val_fraction' is {config.data.val_fraction!r}; "
                      "expected a fraction in [0, 1)")
  registry.get(config.model.name).validate(config)


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"config file '{path}' does not exist")
  spec = importlib.util.spec_from_file_location(
      "jaxvae_config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file '{path}' defines no get_config()")
  return module


def parse_value(text: str, current: Any) -> Any:
  """Turns an override's text into the type of the value it replaces."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError("expected true or false")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"expected {_kind(current)}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and type(value) is not type(current):
    raise ValueError(f"expected {_kind(current)}")
  return value


def _kind(value) -> str:
  return {int: "an integer", float: "a number", tuple: "a tuple such as (1, 2)",
          list: "a list such as [1, 2]"}.get(type(value), f"a {type(value).__name__}")


def overrides_from_args(parser, tokens: list[str]) -> dict[str, str]:
  """`--config.a.b=value` tokens left over by argparse -> {'a.b': 'value'}; anything else is
  reported through `parser.error` (one line, exit status 2)."""
  overrides = {}
  for token in tokens:
    if not token.startswith("--config.") or "=" not in token:
      parser.error(f"unrecognized argument '{token}' (config overrides look like "
                   "--config.train.epochs=3)")
    key, value = token[len("--config."):].split("=", 1)
    overrides[key] = value
  return overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Sets `a.b=value` overrides on a locked config; unknown keys are errors."""
  for dotted, text in overrides.items():
    parent_path, _, leaf = dotted.rpartition(".")
    try:
      parent = _get_path(config, parent_path) if parent_path else config
      current = parent[leaf]
    except (KeyError, AttributeError, TypeError):
      raise ConfigError(f"unknown config key '{dotted}'{_suggest(config, dotted)}") from None
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"config key '{dotted}' is a group; set one of its keys: "
                        f"{', '.join(sorted(current.keys()))}")
    try:
      value = parse_value(text, current)
    except (ValueError, SyntaxError) as e:
      raise ConfigError(f"config key '{dotted}' is {text!r}; {e}") from None
    with parent.unlocked():
      parent[leaf] = value


def _all_keys(config, prefix=""):
  for k, v in config.items():
    path = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      yield from _all_keys(v, path + ".")
    else:
      yield path


def _suggest(config, dotted: str) -> str:
  import difflib
  close = difflib.get_close_matches(dotted, list(_all_keys(config)), n=3, cutoff=0.6)
  return f"; did you mean {' or '.join(close)}?" if close else ""


def load(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """Loads `path[:preset]`, applies overrides, validates, and returns a locked config."""
  path, _, arg = spec.partition(":")
  module = _load_module(path)
  try:
    config = module.get_config(arg or None)
  except KeyError as e:
    raise ConfigError(f"config file '{path}': {e.args[0]}") from None
  apply_overrides(config, overrides or {})
  validate(config)
  config.lock()
  return config


def sibling(config_file: str, name: str, arg: str | None) -> ml_collections.ConfigDict:
  """The config of another file in the same folder, unlocked, so a variant config can be
  written as that config plus a few changes instead of a copy."""
  module = _load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))
  config = module.get_config(arg)
  config.unlock()
  return config


def apply_preset(config: ml_collections.ConfigDict, arg: str | None, presets: dict) -> None:
  """Applies the preset named `arg` (a dict of dotted key -> value) to `config`."""
  if not arg:
    return
  if arg not in presets:
    raise KeyError(f"unknown preset '{arg}'; expected one of {', '.join(presets)}")
  for dotted, value in presets[arg].items():
    parent_path, _, leaf = dotted.rpartition(".")
    parent = _get_path(config, parent_path) if parent_path else config
    if leaf not in parent:
      raise KeyError(f"preset '{arg}' sets unknown key '{dotted}'")
    with parent.unlocked():
      parent[leaf] = value


def small_data_preset() -> dict:
  """Demo-corpus settings sized for a 2-core CPU: 3 s clips, 64 mels, 130 frames."""
  return {
      "data.seconds": 3.0, "data.n_mels": 64, "data.n_fft": 1024, "data.hop_length": 512,
      "train.batch_size": 16, "train.epochs": 8, "kl.epochs": 4.0, "train.log_every_steps": 5,
      "train.image_every_epochs": 4,
  }
