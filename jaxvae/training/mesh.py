"""The data-parallel mesh: one axis `data` over the devices, batches sharded on it, the state
replicated (docs/ARCHITECTURE.md, "Data parallel")."""

from __future__ import annotations

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxvae.errors import ConfigError


def make_mesh(num_devices: int = 0) -> Mesh:
  devices = jax.devices()
  if num_devices > len(devices):
    raise ConfigError(
      f"config key 'train.num_devices' is {num_devices}, but only "
      f"{len(devices)} devices are visible"
    )
  return Mesh(np.array(devices[:num_devices] if num_devices else devices), ("data",))


def check_batch(batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(
      f"config key 'train.batch_size' is {batch_size}, which does not divide "
      f"over {n} devices; use a multiple of {n}"
    )


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def put_batch(batch: dict, sharding: NamedSharding, global_batch_size: int) -> dict:
  """Host batch -> global arrays sharded over the `data` axis (multi-host safe).

  `batch` is either this process's share (what `pipeline.train_iterator` yields: rows
  global_batch_size / process_count) or the whole global batch, the same on every process
  (e.g. `pipeline.eval_batches`); of a global batch each process contributes its own rows.
  """
  count, index = jax.process_count(), jax.process_index()
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if count > 1 and v.shape[0] == global_batch_size:
      share = v.shape[0] // count
      v = v[index * share : (index + 1) * share]
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out
