"""PyTorch references of three jaxvae models, for `tools/benchmark.py` (optional `bench` extra).

Each module has `build(config, input_shape) -> (torch model, loss_fn(model, batch))`, reading
the same jaxvae config as the JAX side so that sizes, batch and optimizer settings agree.
Keyed by `config.model.name`.
"""

from __future__ import annotations

import importlib

MODULES = {
  "conv_vae": "benchmarks.torch_ref.conv_vae",
  "puzzle_vqvae": "benchmarks.torch_ref.puzzle_vqvae",
  "music_transformer": "benchmarks.torch_ref.transformer",
}


def supports(model_name: str) -> bool:
  return model_name in MODULES


def build(config, input_shape):
  """(model, loss_fn) for `config.model.name`; NotImplementedError names what is missing."""
  name = config.model.name
  if name not in MODULES:
    raise NotImplementedError(
      f"no torch reference for model '{name}' (references: {', '.join(MODULES)})"
    )
  return importlib.import_module(MODULES[name]).build(config, input_shape)


def param_count(model) -> int:
  return sum(p.numel() for p in model.parameters())
