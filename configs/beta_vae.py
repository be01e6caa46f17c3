"""Seed-000 beta-VAE: the conv VAE with the KL weight annealed to beta = 4.

  python -m jaxvae.main --config=configs/beta_vae.py:small --workdir=/tmp/beta_vae

Presets: '' (seed size, about 63.6 M parameters), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.name = "conv_vae"
  config.model.channels = (16, 32, 64)
  config.model.latent_dim = 128
  config.model.cond_label = ""
  config.model.cond_dim = 32
  config.model.output_activation = "none"
  config.kl.beta_end = 4.0
  config.train.batch_size = 16
  config_lib.apply_preset(config, arg, {
      "small": config_lib.small_data_preset() | {"model.latent_dim": 32},
  })
  return config.lock()
