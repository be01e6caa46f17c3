"""Device arrays back to host numpy, correct on one process and on many.

A batch-sharded global array of a multi-host run is not addressable from any one process;
`to_host` all-gathers it (every process gets the whole array). Light: imports only JAX.
"""

from __future__ import annotations

import jax
import numpy as np


def to_host(tree):
  """Every array leaf of `tree` as numpy, whole (all processes' shards)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
