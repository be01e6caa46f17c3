"""A neural vocoder (Vocos-style) for the audio VAEs' log-mel features: mel in, waveform out.

A ConvNeXt backbone at the mel frame rate and an inverse-STFT head (magnitude and phase per
frame); trained on random crops of the dataset's clips, first on multi-resolution mel and STFT
losses alone ('spectral' stage), then with multi-period and multi-resolution STFT
discriminators and feature matching ('adversarial' stage). Its mel is computed inside the step
with the feature store's own function and `data.*`'s settings: give it the settings of the
run it will serve with `--config.vocoder.features_from=WORKDIR`.

  python -m jaxvae.main --config=configs/vocoder.py:small --workdir=/tmp/vocoder \\
      --config.vocoder.features_from=/tmp/conv_vae
  python -m jaxvae.main --config=configs/vocoder.py --workdir=runs/vocoder \\
      --config.data.layout=folder --config.data.root=/data/songs
  # fine-tuned on one VAE's reconstructions (docs/VOCODER.md), from a trained vocoder:
  python -m jaxvae.main --config=configs/vocoder.py:small --workdir=/tmp/vocoder_conv \\
      --config.vocoder.inputs_from=/tmp/conv_vae --config.init_from=/tmp/vocoder

Presets:
- '' (a GPU run): Vocos's size (512 channels, 1536-wide MLPs, 8 blocks: 13.5 M parameters in
  the generator) on Vocos's 22,050-Hz features (n_fft 1024, hop 256, 100 mels), batch 16 of
  16,384-sample crops, 20 spectral then 80 adversarial epochs of the dataset's 3-s pieces,
  adamw at 5e-4. Its time on a GPU is not measured here (no GPU was lent to this work);
  `tools/gpu_benchmarks.sh` times its generator.
- 'small' (a 2-core CPU): the `:small` VAE presets' features (64 mels, n_fft 1024, hop 512), a
  1.83-M-parameter generator (192 channels, 6 blocks), batch 16 of 32-hop crops, lr 1e-3, the
  spectral stage only (the adversarial step costs about 27 spectral steps on the CPU); 90
  epochs are about 28 minutes on the 240-clip development corpus (BUILD_NOTES.md, "The neural
  vocoder").
- 'tiny': the test suite's.
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  m = config.model
  m.name = "vocoder"
  m.dim = 512  # Vocos's base size: 512 channels, 1536 wide MLPs, 8 blocks (13.5 M)
  m.intermediate = 1536
  m.layers = 8
  m.kernel = 7
  m.head_fft = 0  # the output STFT's size; 0: 4 hops (Vocos)
  m.periods = (2, 3, 5, 7, 11)  # HiFi-GAN's multi-period discriminator
  m.period_channels = (32, 128, 512, 1024)
  m.resolutions = (512, 1024, 2048)  # the multi-resolution STFT discriminator's sizes
  m.resolution_channels = 32
  d = config.data
  d.feature = "waveform"  # the store holds the clips; the step computes their mel
  d.normalize = "none"
  d.seconds = 3.0
  d.example_mode = "segment"  # every 3-s piece of every file, not one per file
  # The feature settings the vocoder reads, mirrored into the model (they are part of it).
  for key in ("sr", "n_fft", "hop_length", "n_mels", "scale", "db_reference"):
    m[key] = d.get_ref(key)
  o = config.objective
  o.mel_weight = 15.0  # DAC's weights: mel 15, adversarial 1, feature matching 2
  o.stft_weight = 1.0
  o.adv_weight = 1.0
  o.fm_weight = 2.0
  o.gan_loss = "hinge"  # or 'ns' (non-saturating)
  o.disc_lr_scale = 1.0
  v = config.vocoder = base.ml_collections.ConfigDict()
  v.features_from = ""  # an audio run's workdir: its data.sr, n_fft, hop_length, n_mels, ...
  # A VAE's workdir: learn to vocode its reconstructions of the clips (fine-tuning for that
  # model; implies features_from and its data.seconds; start with --config.init_from=VOCODER).
  v.inputs_from = ""
  v.segment_frames = 64  # training crops, in hops (64 x 256 = 16,384 samples, as Vocos)
  v.ema_decay = 0.0  # > 0: an EMA of the generator's weights (e.g. 0.999) for inference
  v.spectral_epochs = 20
  v.adversarial_epochs = 80
  config.train.optimizer = "adamw"
  config.train.lr = 5e-4
  config.train.batch_size = 16
  config.train.best_metric = "mel_l1_db"
  config.train.image_every_epochs = 0  # the listening reports are the VAEs'
  config.kl.beta_end = 0.0  # no latent
  d.hop_length = 256  # Vocos's 22,050-Hz features: n_fft 1024, hop 256, 100 mels
  d.n_fft = 1024
  d.n_mels = 100
  small = {
    **{k: base.small_data_preset()[k] for k in ("data.seconds", "data.n_mels", "data.n_fft")},
    "data.hop_length": 512,
    "data.val_fraction": 0.1,
    "model.dim": 192,
    "model.intermediate": 576,
    "model.layers": 6,
    "model.period_channels": (16, 64, 128, 128),
    "model.resolution_channels": 16,
    "vocoder.segment_frames": 32,
    "vocoder.spectral_epochs": 90,
    "vocoder.adversarial_epochs": 0,
    "train.batch_size": 16,
    "train.lr": 1e-3,
    "train.patience": 0,
    "train.log_every_steps": 10,
  }
  tiny = small | {
    "data.seconds": 1.0,
    "model.dim": 32,
    "model.intermediate": 64,
    "model.layers": 2,
    "model.period_channels": (4, 8),
    "model.periods": (2, 3),
    "model.resolutions": (256, 512),
    "model.resolution_channels": 4,
    "vocoder.segment_frames": 8,
    "vocoder.spectral_epochs": 1,
    "vocoder.adversarial_epochs": 1,
    "train.batch_size": 4,
    "train.lr": 5e-4,
  }
  base.apply_preset(config, arg, {"small": small, "tiny": tiny})
  return config.lock()
