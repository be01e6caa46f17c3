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
from jaxvae.data import sources as sources_lib
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

  def of_source(self, name: str) -> Examples | None:
    """The examples of one source of a `data.sources` store, or None when it has none."""
    ids = {n: i for i, n in enumerate(self.store.sources)}
    if name not in ids:
      return None
    keep = self.indices[self.store.source_array()[self.indices] == ids[name]]
    return Examples(self.store, keep, self.normalize, self.lyrics) if len(keep) else None

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
  weights = source_weights(config, examples)
  if weights:
    ds = _weighted(examples, weights, seed)
  else:
    ds = grain.MapDataset.source(examples).seed(seed).shuffle()[:used]
  if num_shards > 1:
    ds = ds[shard::num_shards]
  ds = ds.batch(batch_size // num_shards, drop_remainder=True)
  if not weights:
    ds = ds.repeat(None)
  options = grain.ReadOptions(
    num_threads=config.data.read_threads, prefetch_buffer_size=config.data.prefetch
  )
  return ds.to_iter_dataset(read_options=options).__iter__()


def source_weights(config, examples: Examples) -> dict[str, float]:
  """{source: weight} of a `data.sources` run that sets weights, over the sources with
  training examples; {} when the epoch is a plain shuffle of every example."""
  given = {s.name: s.weight for s in sources_lib.of_config(config) if s.weight_given}
  if not given:
    return {}
  present = set(examples.store.sources)
  return {name: w for name, w in given.items() if name in present and examples.of_source(name)}


def _weighted(examples: Examples, weights: dict[str, float], seed: int):
  """An endless mix of the sources' training examples in the shares `weights`: each source
  is reshuffled every time it is used up (a small one repeats, a large one is subsampled), and
  every window of a few batches holds the sources in those shares. An epoch is still
  `steps_per_epoch` batches, counted by the trainer."""
  parts = []
  for k, name in enumerate(sorted(weights)):
    part = examples.of_source(name)
    parts.append(grain.MapDataset.source(part).seed(seed + 7919 * (k + 1)).shuffle().repeat(None))
  return grain.MapDataset.mix(parts, [weights[n] for n in sorted(weights)])


def eval_batches(examples: Examples, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """In-order batches; the last one is padded to full size with mask 0."""
  for start in range(0, len(examples), batch_size):
    rows = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
    pad = batch_size - len(rows)
    if pad:
      filler = dict(rows[-1], mask=np.float32(0.0))
      rows += [filler] * pad
    yield {k: np.stack([r[k] for r in rows]) for k in rows[0]}
