"""`--mode=summary`: the model's parameter table and total, from the config alone (no
features computed), printed and written to `DIR/summary.json`."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from jaxvae import workdir as workdir_lib
from jaxvae.data import dataset
from jaxvae.training.state import init_variables
from jaxvae.variants import registry


def parameter_table(params) -> tuple[list[tuple[str, tuple, int]], int]:
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    rows.append((name, tuple(leaf.shape), int(np.prod(leaf.shape))))
  return rows, sum(r[2] for r in rows)


def run(config, workdir: str, args) -> int:
  """Prints the parameter table and `total params: N`; writes summary.json."""
  del args
  spec = dataset.spec_from_config(config)
  variant = registry.get(config.model.name)
  build = variant.build_model
  try:
    model = build(config.model, spec, dtype=config.dtype)
  except ValueError:
    if spec.lyrics_dim or "lyrics" not in variant.outputs:
      raise
    # A lyrics model summarized before its embeddings exist: assume xlm-roberta-base's width.
    spec = dataclasses.replace(spec, lyrics_dim=768)
    model = build(config.model, spec, dtype=config.dtype)
    print("(no data.lyrics_embeddings: assuming 768-d lyrics embeddings, xlm-roberta-base)")
  variables = jax.eval_shape(
    lambda: init_variables(model, spec.example_batch(), jax.random.PRNGKey(0))
  )
  rows, total = parameter_table(variables["params"])
  width = max(len(r[0]) for r in rows)
  print(f"{'parameter':<{width}}  {'shape':>20}  {'count':>12}")
  for name, shape, count in rows:
    print(f"{name:<{width}}  {str(shape):>20}  {count:>12,}")
  print(f"input shape: {spec.input_shape}")
  print(f"total params: {total}")
  workdir_lib.write_json(
    os.path.join(workdir, "summary.json"),
    {
      "model": config.model.name,
      "total_params": total,
      "input_shape": spec.input_shape,
      "parameters": [{"name": n, "shape": s, "count": c} for n, s, c in rows],
    },
    indent=2,
  )
  return 0
