"""Seed-004 audio puzzle VQ-VAE on Speech Commands: exactly 83,777 parameters by default.

Encoder: two 4x4 stride-2 convs (32, 64) + BN + ReLU, bilinear resize to a 30 x 30 grid,
1x1 conv to 64; codebook 10 x 64 (nearest code, codebook loss + 0.25 x commitment,
straight-through); mirrored decoder with a sigmoid output. Input: 1 s at 16 kHz, n_fft 1024,
hop 512, 128 mels x 32 frames, dB, per-clip min-max to [0, 1]. Adam 1e-3, batch 64, 5 epochs.
Corrupt WAVs become silence (counted in the store's manifest). best/ holds the checkpoint
with the lowest validation reconstruction MSE (`train.best_metric`).

  python -m jaxvae.main --config=configs/puzzle_vqvae.py --workdir=runs/puzzle \\
      --config.data.root=/data/speech_commands_v0.02
  python -m jaxvae.main --config=configs/puzzle_vqvae.py:small --workdir=/tmp/puzzle

Beyond the seed: `model.use_ema`, `model.kmeans_init`, `model.dead_code_threshold`,
`model.num_codes`, `model.code_dim`, `model.rotation_trick`, and the bottleneck
`model.quantizer` (`jaxvae.models.quantizers`): 'vq' (the seed's), 'rvq' (`num_quantizers`
residual codebooks, `quantizer_dropout`, `lookup_dim` > 0 for DAC's factorized cosine codes),
'fsq' (`fsq_levels`), 'lfq' (`code_dim` bits, `lfq_entropy_weight`). Presets: '' (seed),
'small' (demo corpus at 16 kHz, 2-core CPU).
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  config.model.name = "puzzle_vqvae"
  config.model.num_codes = 10
  config.model.code_dim = 64
  config.model.grid = (30, 30)
  config.model.enc_channels = (32, 64)
  config.model.dec_channels = (64, 32, 16)
  config.model.commitment_cost = 0.25
  config.model.init_scale = 0.1
  config.model.use_ema = False
  config.model.ema_decay = 0.99
  config.model.dead_code_threshold = 0.0
  config.model.kmeans_init = False
  config.model.rotation_trick = False  # gradients through the rotation to the code
  config.model.quantizer = "vq"  # 'vq', 'rvq', 'fsq' or 'lfq'
  config.model.num_quantizers = 4  # rvq: residual levels
  config.model.quantizer_dropout = 0.0  # rvq: share of examples that keep a random count
  config.model.lookup_dim = 0  # rvq: > 0 for factorized cosine codes of this size
  config.model.fsq_levels = (8, 5, 5, 5)  # fsq: values per dimension (1,000 codes)
  config.model.lfq_entropy_weight = 0.1  # lfq: the entropy term's weight

  config.kl.schedule = "constant"
  config.kl.beta_end = 0.0

  config.data.layout = "speech_commands"
  config.data.sr = 16000
  config.data.seconds = 1.0
  config.data.example_mode = "pad_crop"
  config.data.n_fft = 1024
  config.data.hop_length = 512
  config.data.n_mels = 128
  config.data.normalize = "minmax"
  config.data.on_error = "silence"

  config.train.epochs = 5
  config.train.batch_size = 64
  config.train.optimizer = "adam"
  config.train.lr = 1e-3
  config.train.clip_norm = 0.0
  config.train.patience = 0
  # The best checkpoint by reconstruction: the validation loss is dominated by the codebook
  # and commitment terms while the reconstruction keeps improving.
  config.train.best_metric = "recon_mse"
  config.train.log_every_steps = 50
  config.train.image_every_epochs = 1
  base.apply_preset(
    config,
    arg,
    {
      "small": {
        "data.layout": "demo",
        "data.demo.clips_per_class": 20,
        "train.batch_size": 16,
        "train.epochs": 3,
        "train.log_every_steps": 5,
      }
    },
  )
  return config.lock()
