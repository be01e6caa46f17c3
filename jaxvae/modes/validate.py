"""`--mode=validate`: scan every audio file of the dataset (decodable, finite, long enough,
not silent), print a table of the problems and label counts, write `DIR/validate.json`."""

from __future__ import annotations

import os

from jaxvae import workdir as workdir_lib
from jaxvae.audio import decode as audio_lib
from jaxvae.data import store as store_lib


def run(config, workdir: str, args) -> int:
  """Scans the dataset; non-zero exit only when no usable file remains."""
  del args
  items = store_lib.list_dataset(config)
  report = audio_lib.validate_items(items, sr=config.data.sr, min_seconds=config.data.min_seconds)
  print(audio_lib.format_validation_table(report))
  workdir_lib.write_json(os.path.join(workdir, "validate.json"), report, indent=2)
  if report["ok"] == 0:
    print(f"error: no usable audio file among {len(items)}")
    return 1
  return 0
