"""The base config: every key a run has, grouped by concern, and the helpers config files use.

A config file (`configs/<name>.py`) defines `get_config(arg=None)` that starts from
`base_config()`, sets what its variant needs, applies the preset named by `arg` (e.g. `small`)
with `apply_preset`, and returns the dict locked. Variants add their own keys under `model` and
`objective`; the values are checked by `jaxvae.config.checks` and the variant's own checks.
"""

from __future__ import annotations

import re
from typing import Any

import ml_collections

BEST_DIRECTIONS = ("auto", "min", "max")
DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "warmup_cosine", "plateau")
KL_SCHEDULES = ("constant", "linear", "cyclical")
LAYOUTS = ("demo", "gtzan", "maestro", "speech_commands", "folder", "manifest", "chorales")
KINDS = ("audio", "midi")
ON_ERROR = ("silence", "skip", "raise")
NORMALIZATIONS = ("global", "band", "minmax", "none")
FEATURES = ("mel", "mfcc", "waveform")  # waveform: the clips themselves (a vocoder's data)
EXAMPLE_MODES = ("pad_crop", "segment")
SCALES = ("db", "log1p")
# dB relative to power 1.0 (a clip's level stays in its features) or to each example's
# loudest bin (librosa's ref=np.max: the features do not see the level).
DB_REFERENCES = ("absolute", "peak")
CONV_TRANSPOSE = ("auto", "matmul", "lax")
REPORT_THREAD = ("auto", "yes", "no")
CLUSTER_SPACES = ("standardized", "raw")


def base_config() -> ml_collections.ConfigDict:
  """Keys every config has; variants override and add under `model` and `objective`."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dtype = "float32"  # compute dtype; parameters stay float32.
  c.init_from = ""  # a workdir or checkpoint dir: load its weights, fresh optimizer.
  c.distributed = False  # call jax.distributed.initialize() (multi-host).
  # JAX's persistent compilation cache for every mode (jaxvae/training/compile_cache.py):
  # a re-run loads compiled programs instead of compiling. '' dir: <data cache>/xla.
  c.compile_cache = True
  c.compile_cache_dir = ""
  c.model = model()
  c.objective = objective()
  c.kl = kl()
  c.data = audio_data()
  c.data.midi = midi_data()
  c.data.demo = demo_data()
  c.data.download = download()
  c.eval = evaluation()
  c.generate = generation()
  c.tune = tuning()
  c.train = training()
  return c


def model() -> ml_collections.ConfigDict:
  """The variant and how conv decoders compute (`jaxvae/models/layers.py`)."""
  c = ml_collections.ConfigDict()
  c.name = "conv_vae"
  # How conv decoders compute strided transposed convolutions (jaxvae/models/layers.py):
  # 'auto' (a matmul form on CPU, lax.conv_transpose elsewhere), 'matmul' or 'lax'.
  c.conv_transpose = "auto"
  return c


def objective() -> ml_collections.ConfigDict:
  """Reconstruction term; variants add their own keys."""
  c = ml_collections.ConfigDict()
  c.recon = "mse"  # 'mse' (Gaussian) or 'bce' (inputs in [0, 1]).
  return c


def kl() -> ml_collections.ConfigDict:
  """The KL weight schedule and free bits."""
  c = ml_collections.ConfigDict()
  c.schedule = "linear"
  c.beta_start = 0.0
  c.beta_end = 1.0
  c.steps = 0  # ramp length in steps; 0 means use `epochs`.
  c.epochs = 20.0
  c.cycles = 4  # cyclical: number of ramps over training.
  c.free_bits = 0.0  # nats per latent dimension below which KL is not penalized.
  return c


def audio_data() -> ml_collections.ConfigDict:
  """Dataset layout, audio decoding, features, splits and waveform augmentation."""
  c = ml_collections.ConfigDict()
  c.kind = "audio"  # 'audio' (feature store) or 'midi' (token store)
  c.layout = "demo"
  c.root = ""
  # Several datasets in one store: a tuple of dicts with layout, root and optional name,
  # weight, label_prefix (jaxvae/data/sources.py); replaces layout and root when set.
  c.sources = ()
  c.cache_dir = ""  # '' means $JAXVAE_CACHE or ~/.cache/jaxvae.
  c.sr = 22050
  c.n_fft = 2048
  c.hop_length = 512
  c.n_mels = 128
  c.feature = "mel"
  c.n_mfcc = 40
  c.scale = "db"
  # dB features (mel with scale 'db', or mfcc): relative to power 1 ('absolute') or to each
  # example's loudest bin ('peak': the level is not in the features; gain augmentation is
  # then a no-op, and audio made from features is brought to a -6 dBFS peak).
  c.db_reference = "absolute"
  c.seconds = 30.0
  c.example_mode = "pad_crop"
  c.segment_hop_seconds = 0.0  # 0 means non-overlapping segments.
  # 'global': one mean and std over all training features; 'band': a mean and std per
  # feature band (mel band, MFCC coefficient) over the training clips' frames, so that a
  # wide-ranging band does not outweigh the others in the loss; 'minmax': per example.
  c.normalize = "global"
  c.on_error = "silence"
  c.min_seconds = 0.0
  c.val_fraction = 0.2
  c.split_seed = 0
  c.audio_column = "audio"
  c.lyrics_column = "lyrics"
  c.label_columns = ""  # comma-separated; '' means every label column.
  c.lyrics_embeddings = ""  # path to a lyrics store made by tools/embed_lyrics.py.
  c.read_threads = 2
  c.prefetch = 4
  c.augment = ml_collections.ConfigDict()
  c.augment.copies = 0  # K augmented copies of each training clip in the store; 0: none.
  c.augment.seed = 0
  c.augment.p_pitch = 0.5
  c.augment.max_semitones = 2.0
  c.augment.p_stretch = 0.5
  c.augment.max_stretch = 0.1  # rate uniform in 1 +- this.
  c.augment.p_noise = 0.5
  c.augment.noise_snr_db = (20.0, 40.0)
  c.augment.p_gain = 0.5
  c.augment.gain_db = (-6.0, 6.0)
  c.augment.spec_mask = False  # time/frequency masking inside the jitted train step.
  c.augment.time_masks = 2
  c.augment.time_width = 0.1  # fraction of frames, per band (max).
  c.augment.freq_masks = 2
  c.augment.freq_width = 0.1  # fraction of mel bins, per band (max).
  return c


def midi_data() -> ml_collections.ConfigDict:
  """MIDI tokenization windows and symbolic augmentation (`data.kind=midi`)."""
  c = ml_collections.ConfigDict()
  c.seq_len = 512
  c.overlap = 128
  c.transpose = ()  # extra transposed copies of training pieces, in semitones
  c.tempo_stretch = ()  # extra time-stretched copies of training pieces (1.1: slower)
  c.velocity_jitter = 0  # > 0: copies with each VELOCITY moved by up to this many bins
  c.velocity_copies = 1  # how many velocity-jittered copies (when velocity_jitter > 0)
  c.augment_seed = 0  # seeds the velocity jitter (builds are reproducible)
  c.chorales = 350  # data.layout 'chorales': how many of music21's Bach chorales
  # The tokenization (jaxvae/symbolic/tokenizers.py): 'events' (the seed's 774 ids) or MidiTok's
  # 'remi', 'tsd', 'midi_like' with the settings below; vocab_size > 0 learns a BPE (or
  # vocab_model 'Unigram') vocabulary of that many ids on the training split (MidiTok only).
  c.tokenizer = "events"
  c.vocab_size = 0
  c.vocab_model = "BPE"
  c.window_start = "any"  # 'bar': windows after a piece's first start on a bar (MusicVAE)
  c.miditok = ml_collections.ConfigDict()
  c.miditok.beat_res = 8  # positions per beat (notes up to 4 beats; half as many up to 12)
  c.miditok.num_velocities = 32
  c.miditok.tempos = True  # Tempo tokens (num_tempos bins over 40-250 BPM)
  c.miditok.num_tempos = 32
  c.miditok.programs = True  # False: every melodic track played by one piano
  c.miditok.drums = True  # False: drum tracks are left out
  return c


def demo_data() -> ml_collections.ConfigDict:
  """The built-in demo corpus (`data.layout=demo`)."""
  c = ml_collections.ConfigDict()
  c.clips_per_class = 20  # per (language, genre) pair.
  c.seed = 0
  return c


def download() -> ml_collections.ConfigDict:
  """`--mode=download` (jaxvae/data/download.py): mirrors, retries, what is kept."""
  c = ml_collections.ConfigDict()
  c.archive = ""  # maestro: 'full' (audio+MIDI) or 'midi'; '' picks by data.kind
  c.url = ""  # a mirror; '' means the official URL in jaxvae/data/download.py
  c.sha256 = ""  # the mirror's SHA-256 when it serves another file; '' means the table's
  c.size = 0  # the mirror's size in bytes (with sha256); 0 means the table's
  c.retries = 3  # resumed attempts after a dropped connection, within one run
  c.timeout = 30.0  # seconds without data before an attempt counts as dropped
  c.keep_archive = False  # keep a downloaded archive after extracting (hand-placed: always)
  return c


def evaluation() -> ml_collections.ConfigDict:
  """`--mode=eval`: latent plots, the likelihood estimate, and how many pieces token models
  generate."""
  c = ml_collections.ConfigDict()
  # Audio models: which evaluators run, comma-separated names of
  # jaxvae.evaluators.latents.EVALUATORS (in that order); '' = what the model family declares.
  c.evaluators = ""
  c.plots = "tsne,umap"  # 2-D latent plots in --mode=eval (umap needs umap-learn).
  c.num_generated = 8  # token models: pieces generated to compare with the data
  c.num_reconstructed = 32  # MIDI VAEs: validation windows decoded for note precision / recall
  # What eval's k-means and GMM cluster: 'standardized' = the active latent dimensions (the
  # variance of the means over the clips above 0.01), each scaled to unit variance, as the PCA
  # baseline standardizes its features; 'raw' = the latent means as they are.
  c.cluster_space = "standardized"
  # Gaussian-latent VAEs: posterior draws per validation example of the importance-weighted
  # NLL estimate (IWAE bound; jaxvae.evaluators.likelihood), decoded iw_chunk at a time.
  c.vocoder_clips = 32  # vocoders: validation clips vocoded and compared with Griffin-Lim
  c.timing_repeats = 5  # vocoders: timed calls per batch size (the median is reported)
  c.iw_samples = 100
  c.iw_chunk = 16
  # Audio VAEs: Fréchet and kernel distances of num_samples generated spectrograms to the
  # validation clips in an embedding ('bands': eval.embedding_bands log-mel band statistics;
  # or 'module:function'), for the prior and for a gmm_components-Gaussian mixture fitted to
  # the training posteriors (jaxvae.evaluators.sample_quality).
  c.embedding = "bands"
  c.embedding_bands = 16
  c.num_samples = 256
  c.gmm_components = 10
  return c


def generation() -> ml_collections.ConfigDict:
  """`--mode=generate` and evaluation sampling of token models."""
  c = ml_collections.ConfigDict()
  c.num_tokens = 1024
  c.temperature = 1.0
  c.top_k = 0
  c.top_p = 0.95
  c.interpolation_steps = 5  # --interpolate=a.mid,b.mid: points from a to b
  c.seconds = 0.0  # waveform VAEs: the length of --mode=generate's prior samples (0: data.seconds)
  # A vocoder's workdir (configs/vocoder.py trained on this run's features): the audio of
  # --mode=generate and of the training reports goes through it; '' = Griffin-Lim.
  c.vocoder = ""
  return c


def tuning() -> ml_collections.ConfigDict:
  """`--mode=tune`: the search space and the study."""
  c = ml_collections.ConfigDict()
  c.space = ""  # e.g. "train.lr=loguniform(1e-5, 1e-2); model.latent_dim=int(8, 64)"
  c.num_trials = 20
  c.epochs = 5  # training epochs per trial
  c.pruner_startup_trials = 3
  c.pruner_warmup_epochs = 1
  return c


def training() -> ml_collections.ConfigDict:
  """Optimization, schedules, checkpoints, reports, devices and the divergence guard."""
  c = ml_collections.ConfigDict()
  c.epochs = 100
  c.batch_size = 32
  c.optimizer = "adam"
  c.lr = 1e-3
  c.lr_schedule = "constant"
  c.warmup_steps = 0
  c.min_lr_ratio = 0.0
  c.weight_decay = 0.0
  c.plateau_factor = 0.5  # lr_schedule 'plateau': scale applied on a plateau,
  c.plateau_patience = 10  # after this many non-improving loss readings,
  c.plateau_accumulation = 1  # each the mean over this many steps.
  c.clip_norm = 0.5
  c.grad_accum_steps = 1
  # The validation metric that picks the best checkpoint (best/) and drives early stopping:
  # any metric the objective reports ('loss', 'recon_mse', 'nll', ...); its direction is
  # 'min', 'max', or 'auto' (max for accuracies and other scores, min otherwise).
  c.best_metric = "loss"
  c.best_direction = "auto"
  c.patience = 15  # early stopping on train.best_metric; 0 disables.
  # An epoch that improves the best metric by less than this share of its best value (0.002:
  # 0.2 %) still counts toward patience (the best checkpoint follows every improvement).
  c.min_delta = 0.0
  # The trainer's epoch in steps (validation, checkpoints, reports, patience and stage lengths
  # count these); 0: one pass over the training split. With train.max_steps it makes a budget
  # that means the same on a corpus of any size.
  c.eval_every_steps = 0
  c.log_every_steps = 10
  c.checkpoint_every_steps = 0  # 0: at the end of every epoch only.
  c.keep_checkpoints = 3
  c.image_every_epochs = 5  # report every N epochs (and after the first); 0: never
  c.report_samples = True  # prior samples in the report
  # Audio in the report: a reconstruction and a sample (mel models: through generate.vocoder,
  # else Griffin-Lim); models that make waveforms: a clip and its reconstruction.
  c.report_audio = True
  c.report_tsne = False  # t-SNE of validation latents (a few seconds each time)
  # Draw reports on a background thread while training goes on: 'auto' (on GPU/TPU, not on
  # the CPU, where drawing competes with the steps for cores and the GIL), 'yes' or 'no'.
  c.report_thread = "auto"
  c.num_devices = 0  # devices in the data-parallel mesh; 0 means all local devices.
  c.max_steps = 0  # 0: no limit beyond epochs (useful for smoke runs).
  c.loss_scale_init = 2.0**15  # float16 dynamic loss scaling start.
  # A step whose loss or gradient norm is non-finite is skipped (counted as
  # train/nonfinite_steps); this many in a row stop the run (exit 1). 0: skip, never stop.
  c.max_nonfinite_steps = 25
  # More than this share of an epoch's steps skipped as non-finite also stops the run (an update
  # that left the parameters finite but broken); 1.0: never.
  c.max_nonfinite_share = 0.5
  # A wall-time budget (a scheduler slot): seconds, or '90m', '4h', '1:30:00'; 0: none. The run
  # saves a checkpoint and exits with status 75 while the budget still covers stopping; the same
  # command resumes it.
  c.max_runtime = "0"
  # Where the logs go besides metrics.jsonl: comma-separated names from WRITERS ('mlflow' needs
  # pip install 'jaxvae[mlflow]'; its store is DIR/mlruns unless mlflow_uri names another, its
  # experiment the model's name unless mlflow_experiment does. 'wandb' needs
  # pip install 'jaxvae[wandb]'; offline under DIR/wandb unless WANDB_MODE says otherwise, in
  # project wandb_project, default the model's name).
  c.writers = "tensorboard"
  c.mlflow_uri = ""
  c.mlflow_experiment = ""
  c.wandb_project = ""
  return c


WRITERS = ("tensorboard", "mlflow", "wandb")


def writer_names(config) -> list[str]:
  """`train.writers` as a list of names (checked by `config.checks`)."""
  return [n.strip() for n in str(config.train.writers).split(",") if n.strip()]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value) -> float | None:
  """Seconds of a duration such as `train.max_runtime` (a number of seconds, '45s', '90m',
  '4h', '2d', 'H:MM:SS' or 'MM:SS'); None when it is none of those. 0 means none."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value) if value >= 0 else None
  text = str(value).strip()
  match = _DURATION.match(text)
  if match:
    return float(match.group(1)) * _UNITS[match.group(2)]
  parts = text.split(":")
  if 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
    seconds = 0.0
    for part in parts:
      seconds = seconds * 60 + int(part)
    return seconds
  return None


def flat(config, prefix: str = "") -> dict:
  """{'train.lr': 0.001, ...}: the config's plain values by dotted key (hparams for the logs)."""
  out = {}
  for k, v in config.items():
    if hasattr(v, "items"):
      out |= flat(v, f"{prefix}{k}.")
    elif isinstance(v, (int, float, str, bool)):
      out[f"{prefix}{k}"] = v
  return out


def get_path(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def apply_preset(config: ml_collections.ConfigDict, arg: str | None, presets: dict) -> None:
  """Applies the preset named `arg` (a dict of dotted key -> value) to `config`."""
  if not arg:
    return
  if arg not in presets:
    raise KeyError(f"unknown preset '{arg}'; expected one of {', '.join(presets)}")
  for dotted, value in presets[arg].items():
    parent_path, _, leaf = dotted.rpartition(".")
    parent = get_path(config, parent_path) if parent_path else config
    if leaf not in parent:
      raise KeyError(f"preset '{arg}' sets unknown key '{dotted}'")
    with parent.unlocked():
      parent[leaf] = value


# The `:small` presets' training budget: at most SMALL_MAX_STEPS optimizer steps, validated
# every SMALL_EVAL_EVERY steps, stopped early when the validation loss has not improved by
# 0.1 % for SMALL_PATIENCE validations; the KL ramp in steps. The same on a corpus of any size
# (a fixed count of epochs undertrained small corpora: BUILD_NOTES.md, "Presets that train to
# convergence").
SMALL_MAX_STEPS = 2000
SMALL_EVAL_EVERY = 50
SMALL_PATIENCE = 8


def small_data_preset() -> dict:
  """2-core CPU settings: 3 s clips, 64 mels, 130 frames, and the step budget above."""
  return {
    "data.seconds": 3.0,
    "data.n_mels": 64,
    "data.n_fft": 1024,
    "data.hop_length": 512,
    "train.batch_size": 16,
    "train.max_steps": SMALL_MAX_STEPS,
    "train.eval_every_steps": SMALL_EVAL_EVERY,
    "train.epochs": SMALL_MAX_STEPS // SMALL_EVAL_EVERY,  # epochs of eval_every_steps steps
    "train.patience": SMALL_PATIENCE,
    "train.min_delta": 0.001,
    "kl.steps": 400,
    "train.log_every_steps": 10,
    "train.image_every_epochs": 10,
  }
