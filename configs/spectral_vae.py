"""Seed-002 spectral MusicVAE: frequency-weighted MSE + FFT-magnitude spectral loss + output
range regularization, low beta (0.05), lr 5e-5, clip 1.0 (2,482,849 parameters by default).

Four 3x3 stride-2 convs (32, 64, 128, 256) + BN + GELU, latent 16; input 128 mels x 259
frames: 3 s segments at 22,050 Hz, n_fft 1024, hop 256; dB then z-score.

  python -m jaxvae.main --config=configs/spectral_vae.py --workdir=runs/spectral \\
      --config.data.root=/data/GTZAN
  python -m jaxvae.main --config=configs/spectral_vae.py:small --workdir=/tmp/spectral

Resume with changed hyperparameters: re-run in the same workdir with e.g.
--config.train.lr=2e-5 --config.kl.beta_end=0.1 --config.train.epochs=80 (optimizer moments,
step and data position are kept; the new values apply from the next step).
Presets: '' (seed), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae.config import base
from jaxvae.losses import reconstruction


def get_config(arg=None):
  config = base.base_config()
  config.model.name = "spectral_vae"
  config.model.channels = (32, 64, 128, 256)
  config.model.latent_dim = 16
  config.model.output_activation = "none"

  config.objective.recon_loss = "weighted_mse"
  config.objective.bands = reconstruction.DEFAULT_BANDS  # 0-20 % x1.5, 30-70 % x2.0, 80-100 % x0.8
  config.objective.spectral_weight = 0.1
  config.objective.fft_sizes = ()  # () = one full-length FFT along time; e.g. (16, 64)
  config.objective.spectral_kind = "l1"
  config.objective.range_weight = 0.1
  config.objective.range_margin = 0.0

  config.kl.schedule = "constant"
  config.kl.beta_end = 0.05

  config.data.layout = "gtzan"
  config.data.sr = 22050
  config.data.seconds = 3.0
  config.data.example_mode = "segment"
  config.data.n_fft = 1024
  config.data.hop_length = 256
  config.data.n_mels = 128
  config.data.normalize = "global"

  config.train.lr = 5e-5
  config.train.clip_norm = 1.0
  config.train.batch_size = 32
  config.train.epochs = 100
  base.apply_preset(
    config,
    arg,
    {
      "small": {
        "data.layout": "demo",
        "data.n_mels": 64,
        "data.example_mode": "pad_crop",
        "model.channels": (8, 16, 32, 64),
        "train.batch_size": 16,
        "train.epochs": 8,
        "train.lr": 1e-3,
        "train.log_every_steps": 5,
        "train.image_every_epochs": 4,
      }
    },
  )
  return config.lock()
