"""Batches from a feature store: a seeded, checkpointable Grain pipeline for training and
ordered, padded batches for evaluation.

Every batch is a dict of numpy arrays (see docs/ARCHITECTURE.md): `x`, `mask`, `label_<name>`
and, when the run has lyrics embeddings, `lyrics` and `lyrics_mask`.
"""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from jaxvae import errors
from jaxvae.data import store as store_lib


class Examples:
  """Random access to normalized examples and their labels (a Grain data source)."""

  def __init__(self, store: store_lib.Store, indices: np.ndarray, normalize: str, lyrics=None):
    self.store = store
    self.indices = np.asarray(indices, np.int64)
    self.normalize = normalize
    self.labels = {name: store.label_array(name) for name in store.label_values}
    self.lyrics = lyrics

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    j = int(self.indices[i])
    out = self.store.example(j, self.normalize)
    for name, values in self.labels.items():
      out[f"label_{name}"] = values[j]
    if self.lyrics is not None:
      out["lyrics"] = self.lyrics.vectors[j]
      out["lyrics_mask"] = self.lyrics.mask[j]
    return out


def split_examples(config, store, split: str, lyrics=None) -> Examples:
  return Examples(store, store.indices(split), config.data.normalize, lyrics)


def steps_per_epoch(examples: Examples, batch_size: int) -> int:
  if len(examples) < batch_size:
    raise errors.DataError(
      f"the training split has {len(examples)} examples, fewer than train.batch_size "
      f"{batch_size}; lower config key 'train.batch_size' or add data"
    )
  return len(examples) // batch_size


def train_iterator(
  examples: Examples, batch_size: int, seed: int, config, *, shard: int = 0, num_shards: int = 1
):
  """An endless iterator of shuffled full batches, reshuffled each epoch; checkpointable.

  Multi-host: every process shuffles with the same seed, keeps the epoch's first
  steps x batch_size examples, and takes every `num_shards`-th from position `shard`, in
  batches of batch_size / num_shards: process p's k-th batch is its share of the same global
  batch k, disjoint from the others', and every process has the same number of steps.
  """
  if batch_size % num_shards:
    raise errors.DataError(
      f"train.batch_size {batch_size} does not divide over {num_shards} processes"
    )
  used = steps_per_epoch(examples, batch_size) * batch_size
  ds = grain.MapDataset.source(examples).seed(seed).shuffle()[:used]
  if num_shards > 1:
    ds = ds[shard::num_shards]
  ds = ds.batch(batch_size // num_shards, drop_remainder=True).repeat(None)
  options = grain.ReadOptions(
    num_threads=config.data.read_threads, prefetch_buffer_size=config.data.prefetch
  )
  return ds.to_iter_dataset(read_options=options).__iter__()


def eval_batches(examples: Examples, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """In-order batches; the last one is padded to full size with mask 0."""
  for start in range(0, len(examples), batch_size):
    rows = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
    pad = batch_size - len(rows)
    if pad:
      filler = dict(rows[-1], mask=np.float32(0.0))
      rows += [filler] * pad
    yield {k: np.stack([r[k] for r in rows]) for k in rows[0]}
