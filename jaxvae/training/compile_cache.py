"""JAX's persistent compilation cache, on by default for every mode: the second run of the
same command (resume, eval, generate, analyze, another seed) loads its compiled programs from
disk instead of compiling them again.

The folder is `compile_cache_dir`, else `$JAX_COMPILATION_CACHE_DIR` when set, else
`<jaxvae cache>/xla` (the feature stores' cache root: `data.cache_dir`, `$JAXVAE_CACHE` or
~/.cache/jaxvae). `compile_cache=False` turns it off. Entries are keyed by the program, the
compiler options and the device kind, so a stale entry is never used; deleting the folder is
always safe.
"""

from __future__ import annotations

import logging
import os

import jax

from jaxvae.data import listing

# Cache every program, however fast it compiled: a run compiles tens of small ones (eval
# steps, feature functions, samplers) whose sum is what a user waits for.
MIN_COMPILE_SECONDS = 0.0


def folder(config) -> str | None:
  """Where `enable` puts the cache for `config`; None when it is off."""
  if not config.compile_cache:
    return None
  return (
    config.compile_cache_dir
    or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    or os.path.join(listing.cache_dir(config), "xla")
  )


def enable(config) -> str | None:
  """Points this process's compilation cache at `folder(config)` (or turns it off); call
  before the first compilation. Returns the folder."""
  path = folder(config)
  if path is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning("No persistent compilation cache (cannot create %s: %s)", path, e.strerror)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
