"""Seed-000 conditional VAE on the genre label (68,839,777 parameters with 3 classes).

The conv VAE (configs/conv_vae.py) with a 32-d learned embedding of the genre joined to the
encoder features and to z. Generate conditioned samples (mel .npy + PNG + Griffin-Lim WAV):

  python -m jaxvae.main --config=configs/cvae_genre.py:small --workdir=/tmp/cvae_genre
  python -m jaxvae.main --config=configs/cvae_genre.py:small --workdir=/tmp/cvae_genre \\
      --mode=generate --condition=rock --num_samples=4

On your own data the label column must exist (a manifest column, or the layout's label:
gtzan 'genre', speech_commands 'word', folder 'label'): --config.model.cond_label=<column>.
Presets: those of conv_vae: '' (seed size), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae.config import loading


def get_config(arg=None):
  config = loading.sibling(__file__, "conv_vae.py", arg)
  config.model.cond_label = "genre"
  return config.lock()
