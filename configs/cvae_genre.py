"""Seed-000 conditional VAE on the genre label (about 68.8 M parameters by default).

The conv VAE with a 32-d learned embedding of the genre joined to the encoder features and to
z. Generate conditioned samples (mel .npy + PNG + Griffin-Lim WAV) after training:

  python -m jaxvae.main --config=configs/cvae_genre.py:small --workdir=/tmp/cvae_genre
  python -m jaxvae.main --config=configs/cvae_genre.py:small --workdir=/tmp/cvae_genre \\
      --mode=generate --condition=rock --num_samples=4

On your own data the label column must exist (manifest column, or the layout's label: gtzan
'genre', speech_commands 'word', folder 'label'): set --config.model.cond_label=<column>.
Presets: '' (seed size), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.name = "conv_vae"
  config.model.channels = (16, 32, 64)
  config.model.latent_dim = 128
  config.model.cond_label = "genre"
  config.model.cond_dim = 32
  config.model.output_activation = "none"
  config.train.batch_size = 16
  config_lib.apply_preset(config, arg, {
      "small": config_lib.small_data_preset() | {"model.latent_dim": 32},
  })
  return config.lock()
