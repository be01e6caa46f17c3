"""Several processes (multi-host): starting them, who writes, and device arrays back to host
numpy, correct on one process and on many.

A batch-sharded global array of a multi-host run is not addressable from any one process;
`to_host` all-gathers it (every process gets the whole array). Light: imports only JAX.
"""

from __future__ import annotations

import logging
import os

import jax
from jax.experimental import multihost_utils
import numpy as np


def to_host(tree):
  """Every array leaf of `tree` as numpy, whole (all processes' shards)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def from_main(tree):
  """`tree` (host numpy) as process 0 has it, on every process: for results of host code
  that may differ between processes (threaded t-SNE, for one)."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def gather_flags(flag: int) -> list[int]:
  """Every process's `flag` (an int), in process order: how the processes agree on a stop
  (`jaxvae.training.preemption.agree`). Every process must call it at the same step."""
  return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(flag))).ravel()]


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` for a multi-host run (`config.distributed=True`).

  JAX finds the coordinator itself under SLURM, Open MPI and Kubernetes (with the
  `kubernetes` package); elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0) and
  JAX_NUM_PROCESSES / JAX_PROCESS_ID, which this passes on.
  """
  kwargs = {}
  for env, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if os.environ.get(env):
      kwargs[arg] = int(os.environ[env])
  jax.distributed.initialize(**kwargs)
  logging.info(
    "Process %d of %d; %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def is_main_process() -> bool:
  """Only process 0 writes logs, reports and run files; every process checkpoints."""
  return jax.process_index() == 0
