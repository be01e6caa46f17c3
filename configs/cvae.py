"""Seed-000 conditional VAEs: the conv VAE (configs/conv_vae.py) with a 32-d learned embedding
of one label joined to the encoder features and to z (68,839,777 parameters with 3 classes).

Presets name the label, optionally with ',small' (the demo corpus on a 2-core CPU):
'genre' (the default), 'language', 'genre,small', 'language,small' ('small' alone is
'genre,small', as every config has a 'small'). Train, then generate
conditioned samples (mel .npy + PNG + Griffin-Lim WAV):

  python -m jaxvae.main --config=configs/cvae.py:genre,small --workdir=/tmp/cvae_genre
  python -m jaxvae.main --config=configs/cvae.py:genre,small --workdir=/tmp/cvae_genre \\
      --mode=generate --condition=rock --num_samples=4
  python -m jaxvae.main --config=configs/cvae.py:language,small --workdir=/tmp/cvae_language

On your own data the label column must exist (a manifest column, or the layout's label:
gtzan 'genre', speech_commands 'word', folder 'label'): --config.model.cond_label=<column>.
"""

from jaxvae.config import loading

LABELS = ("genre", "language")


def get_config(arg=None):
  label, _, size = ("genre,small" if arg == "small" else arg or "genre").partition(",")
  if label not in LABELS or size not in ("", "small"):
    raise KeyError(
      f"unknown preset '{arg}'; expected one of {', '.join(LABELS)}, optionally with ',small'"
    )
  config = loading.sibling(__file__, "conv_vae.py", size or None)
  config.model.cond_label = label
  return config.lock()
