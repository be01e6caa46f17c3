"""Seed 003's `--dataset combined`: the HarmonicVAE (configs/harmonic_vae.py) trained on
GTZAN + MAESTRO audio + a folder of your own clips in one run. The three are featurized with
the one feature setting into one store; each keeps its split (MAESTRO's csv; a seeded hash
for the others); each epoch draws them in equal shares (`weight`; MAESTRO's 200 hours would
otherwise drown GTZAN's 8), validation reports
`val/<source>/...` beside the overall numbers; labels get the `source` label, and the
folder's labels the prefix 'custom:' so its classes stay apart from GTZAN's genres.

  python -m jaxvae.main --config=configs/harmonic_combined.py --workdir=runs/x --mode=download
  python -m jaxvae.main --config=configs/harmonic_combined.py --workdir=runs/combined
  # CPU smoke run of the same path, no download: the demo corpus as the one source
  python -m jaxvae.main --config=configs/harmonic_combined.py:small --workdir=/tmp/combined

`--mode=download` fetches GTZAN into data/gtzan and the full MAESTRO v3 (101 GB) into
data/maestro; put your clips in data/custom/<label>/*.wav. Other roots:
--config.data.sources="({'layout': 'gtzan', 'root': '/d/gtzan', 'weight': 1.0}, ...)" (see
jaxvae/data/sources.py for the keys).

Presets: '' (the three datasets under data/), 'small' (demo corpus, 2-core CPU).
"""

from jaxvae.config import loading


def get_config(arg=None):
  config = loading.sibling(__file__, "harmonic_vae.py", arg)
  config.data.layout = "demo"  # unused: data.sources names every dataset
  config.data.sources = (
    dict(name="gtzan", layout="gtzan", root="data/gtzan", weight=1.0),
    dict(name="maestro", layout="maestro", root="data/maestro", weight=1.0),
    dict(name="custom", layout="folder", root="data/custom", weight=1.0, label_prefix="custom:"),
  )
  if arg == "small":
    config.data.sources = (dict(name="demo", layout="demo", weight=1.0),)
  return config.lock()
