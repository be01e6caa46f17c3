"""`--mode=preprocess`: build (or reuse) the dataset's feature or token store, report its
examples and bad files, and write `DIR/preprocess.json`."""

from __future__ import annotations

import os

from jaxvae import workdir as workdir_lib
from jaxvae.data import dataset


def run(config, workdir: str, args) -> int:
  store = dataset.open_store(config, progress=args.progress)
  m = store.manifest
  print(f"feature store: {store.path}")
  print(
    f"examples: {len(m['examples'])} of shape {list(store.shape)} from "
    f"{m['dataset']['num_files']} files; bad files: {len(m['bad'])}"
  )
  for name, src in store.sources.items():
    print(
      f"  source {name} ({src['layout']}): {src['examples']} examples {src['splits']} from "
      f"{src['files']} files; bad files: {src['bad']}; labels: "
      + "; ".join(f"{k} {len(v)}" for k, v in src["label_values"].items())
    )
  for b in m["bad"][:20]:
    print(f"  bad: {b['path']}: {b['reason']} ({b['action']})")
  workdir_lib.write_json(
    os.path.join(workdir, "preprocess.json"),
    {
      "store": store.path,
      "examples": len(m["examples"]),
      "shape": list(store.shape),
      "bad": m["bad"],
      "label_values": m["label_values"],
      **({"sources": store.sources} if store.sources else {}),
    },
    indent=2,
  )
  return 0
