"""Seed-000 beta-VAE: the conv VAE (configs/conv_vae.py) with the KL weight annealed to 4.

  python -m jaxvae.main --config=configs/beta_vae.py:small --workdir=/tmp/beta_vae

Presets: those of conv_vae: '' (seed size, 63,555,809 parameters), 'small' (demo corpus,
2-core CPU).
"""

from jaxvae.config import loading


def get_config(arg=None):
  config = loading.sibling(__file__, "conv_vae.py", arg)
  config.kl.beta_end = 4.0
  return config.lock()
