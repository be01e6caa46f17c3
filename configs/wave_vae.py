"""A RAVE-style waveform VAE (`jaxvae.models.wave_vae`): waveform in, waveform out, through a
PQMF, a strided convolutional encoder to a low-rate Gaussian latent and a decoder with
waveform, loudness and noise branches; phase 1 learns the representation (multi-scale
spectral losses + KL), phase 2 trains the decoder adversarially with the encoder frozen (the
vocoder's discriminators). Causal presets stream: `stream_decode` decodes chunk by chunk
with cached convolutions and equals the offline decoding; `stream_encode` encodes as the
samples come (the offline encoding of the input delayed by the PQMF's latency).
`--mode=generate` writes prior samples (`generate.seconds`) or, with
`--interpolate=a.wav,b.wav`, a latent path as WAVs; `--mode=eval` and `--mode=export` as
docs/WAVE.md says.

  python -m jaxvae.main --config=configs/wave_vae.py:small --workdir=/tmp/wave_vae
  python -m jaxvae.main --config=configs/wave_vae.py --workdir=runs/wave \\
      --config.data.layout=folder --config.data.root=/data/songs

Presets:
- '' (a GPU run): 44.1 kHz, 16 bands, strides (4, 4, 4, 2): 2,048 samples per latent frame
  (21.5 frames/s, RAVE v2's), 64 channels, latent 16, causal; 1-s pieces, batch 16.
- 'small' (a 2-core CPU): 22,050 Hz, 16 bands, strides (4, 4, 4): 1,024 samples per latent
  frame (21.5 frames/s; 43 at 44.1 kHz), 32 channels, latent 16, causal; the representation
  stage only.
- 'tiny': the test suite's.
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  m = config.model
  m.name = "wave_vae"
  m.bands = 16  # PQMF sub-bands
  m.channels = 64  # after the first convolution; doubled by each strided one
  m.ratios = (4, 4, 4, 2)  # encoder strides after the PQMF (decoder: the reverse)
  m.latent_dim = 16
  # 'gaussian' (a VAE) or a codec's quantizer: 'rvq', 'fsq', 'lfq' (docs/WAVE.md)
  m.bottleneck = "gaussian"
  m.num_codes = 1024  # rvq: codes per codebook
  m.num_quantizers = 8  # rvq: residual codebooks (one model decodes with 1..8 of them)
  m.quantizer_dropout = 0.5  # rvq: share of training examples with a random count
  m.lookup_dim = 0  # rvq: > 0 for DAC's factorized cosine codes of this size
  m.fsq_levels = (8, 5, 5, 5)  # fsq: values per dimension (latent_dim = their count)
  m.kernel = 3
  m.dilations = (1, 3, 9)  # of each residual block
  m.causal = True  # convolutions look back only: the decoder streams
  m.pqmf_overlap = 8  # prototype taps per band and side (257 taps at 16 bands)
  m.periods = (2, 3, 5, 7, 11)  # the vocoder's discriminators
  m.period_channels = (16, 64, 128, 128)
  m.resolutions = (512, 1024, 2048)
  m.resolution_channels = 16
  d = config.data
  d.feature = "waveform"
  d.normalize = "none"
  d.sr = 44100
  d.seconds = 1.0
  d.example_mode = "segment"  # every 1-s piece of every file
  o = config.objective
  o.mel_weight = 1.0
  o.stft_weight = 1.0
  o.adv_weight = 1.0
  o.fm_weight = 10.0  # RAVE weighs feature matching 10
  o.gan_loss = "hinge"
  o.disc_lr_scale = 1.0
  w = config.wave = base.ml_collections.ConfigDict()
  w.stft_sizes = (2048, 1024, 512, 256, 128)  # the multi-scale STFT loss (RAVE's scales)
  # The Gaussian latent's regularizer, weighted by the kl.* schedule: 'kl' (a VAE) or 'mmd'
  # (the MMD of the latent's samples to N(0, I): RAVE's Wasserstein-autoencoder option).
  w.regularizer = "kl"
  w.representation_epochs = 100
  w.adversarial_epochs = 100
  config.kl.beta_end = 0.1  # RAVE's beta is small: the spectral terms dominate
  config.kl.steps = 5000
  config.train.optimizer = "adam"
  config.train.lr = 1e-4
  config.train.batch_size = 16
  config.train.best_metric = "mel_l1_db"
  # The training report (every 5 epochs and after the first): the mel of validation clips and
  # their reconstructions, and the first clip and its reconstruction as audio.
  config.train.image_every_epochs = 5
  config.train.clip_norm = 0.0
  small = {
    "data.sr": 22050,
    "model.channels": 32,
    "model.ratios": (4, 4, 4),
    "model.dilations": (1, 3),
    "model.period_channels": (8, 16, 32, 32),
    "model.resolution_channels": 8,
    "wave.representation_epochs": 40,
    "wave.adversarial_epochs": 0,
    "kl.steps": 1000,
    "train.lr": 1e-3,
    "train.patience": 0,
    "train.log_every_steps": 10,
  }
  tiny = small | {
    "data.seconds": 0.5,
    "model.bands": 4,
    "model.channels": 8,
    "model.ratios": (2, 2),
    "model.latent_dim": 4,
    "model.pqmf_overlap": 4,
    "model.periods": (2, 3),
    "model.period_channels": (4, 8),
    "model.resolutions": (256, 512),
    "model.resolution_channels": 4,
    "wave.stft_sizes": (512, 256, 128),
    "wave.representation_epochs": 1,
    "wave.adversarial_epochs": 1,
    "kl.steps": 10,
    "train.batch_size": 4,
  }
  base.apply_preset(config, arg, {"small": small, "tiny": tiny})
  return config.lock()
