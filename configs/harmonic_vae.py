"""Seed-003 HarmonicVAE: MLP VAE [1024, 512, 256], latent 128, on 4 s log1p mel segments
(n_fft 2048, hop 512, 128 mels x 173 frames, per-clip min-max); beta rises linearly
1e-4 -> 1e-2 over the first 30 % of training; reduce-on-plateau; the consonance-weighted
HarmonicLayer as an option (model.harmonic=True). 46,785,920 parameters by default.

  python -m jaxvae.main --config=configs/harmonic_vae.py --workdir=runs/harmonic \\
      --config.data.root=/data/GTZAN
  python -m jaxvae.main --config=configs/harmonic_vae.py:small --workdir=/tmp/harmonic
  # fine-tune another run's weights on another dataset (optimizer fresh):
  python -m jaxvae.main --config=configs/harmonic_vae.py --workdir=runs/harmonic_maestro \\
      --config.data.layout=maestro --config.data.root=/data/maestro-v3.0.0 \\
      --config.init_from=runs/harmonic
  # hyperparameter search (Optuna, resumable):
  python -m jaxvae.main --config=configs/harmonic_vae.py:small --workdir=/tmp/harmonic_tune \\
      --mode=tune

Presets: '' (seed), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  config.model.name = "harmonic_vae"
  config.model.hidden = (1024, 512, 256)
  config.model.latent_dim = 128
  config.model.dropout = 0.0
  config.model.batch_norm = False
  config.model.harmonic = False
  config.model.harmonic_sigma = 0.02
  config.model.fmin = 0.0
  config.model.fmax = 11025.0
  config.model.output_activation = "sigmoid"

  config.objective.recon_loss = "mse"
  config.objective.bands = ((0.0, 0.2, 1.5), (0.3, 0.7, 2.0), (0.8, 1.0, 0.8))
  config.objective.spectral_weight = 0.0
  config.objective.fft_sizes = ()
  config.objective.range_weight = 0.0

  config.kl.schedule = "linear"
  config.kl.beta_start = 1e-4
  config.kl.beta_end = 1e-2
  config.kl.epochs = 15.0  # 30 % of train.epochs

  config.data.layout = "gtzan"
  config.data.sr = 22050
  config.data.seconds = 4.0
  config.data.example_mode = "segment"
  config.data.n_fft = 2048
  config.data.hop_length = 512
  config.data.n_mels = 128
  config.data.scale = "log1p"
  config.data.normalize = "minmax"

  config.train.epochs = 50
  config.train.batch_size = 32
  config.train.lr = 1e-3
  config.train.lr_schedule = "plateau"
  config.train.plateau_patience = 200  # steps of non-improving training loss
  config.train.clip_norm = 1.0

  config.tune.space = (
    "train.lr=loguniform(1e-4, 3e-3); model.latent_dim=int(16, 128); "
    "kl.beta_end=loguniform(1e-3, 1e-1); "
    "model.hidden=choice((256, 128, 64), (1024, 512, 256))"
  )
  config.tune.num_trials = 20
  config.tune.epochs = 5
  base.apply_preset(
    config,
    arg,
    {
      "small": {
        "data.layout": "demo",
        "data.n_mels": 64,
        "data.example_mode": "pad_crop",
        "model.hidden": (256, 128, 64),
        "model.latent_dim": 32,
        "train.epochs": 10,
        "kl.epochs": 3.0,
        "train.batch_size": 16,
        "train.log_every_steps": 5,
        "train.image_every_epochs": 5,
        "tune.epochs": 2,
        "tune.num_trials": 6,
      }
    },
  )
  return config.lock()
