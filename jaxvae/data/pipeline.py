"""Batches from a feature store: a seeded, checkpointable Grain pipeline for training and
ordered, padded batches for evaluation.

Every batch is a dict of numpy arrays (see docs/ARCHITECTURE.md): `x`, `mask`, `label_<name>`
and, when the run has lyrics embeddings, `lyrics` and `lyrics_mask`.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import grain
import numpy as np

from jaxvae.data import readers
from jaxvae.data import store as store_lib
from jaxvae.data.spec import DataSpec


class Lyrics:
  """Lyrics embeddings aligned to a store's clip ids (from tools/embed_lyrics.py)."""

  def __init__(self, path: str, clip_ids: list[str]):
    emb_path = os.path.join(path, "embeddings.npy")
    if not os.path.exists(emb_path):
      raise readers.DataError(f"config key 'data.lyrics_embeddings': '{path}' has no "
                              "embeddings.npy; make it with tools/embed_lyrics.py")
    clips_path = os.path.join(path, "clips.json")
    if not os.path.exists(clips_path):  # written last: its absence means an interrupted write
      raise readers.DataError(f"config key 'data.lyrics_embeddings': '{path}' has no "
                              "clips.json (an interrupted write?); run tools/embed_lyrics.py "
                              "again")
    table = np.load(emb_path, allow_pickle=False).astype(np.float32)
    with open(clips_path, encoding="utf-8") as f:
      meta = json.load(f)
    if table.ndim != 2 or table.shape != (len(meta["clip_ids"]), meta["dim"]):
      raise readers.DataError(
          f"config key 'data.lyrics_embeddings': '{emb_path}' has shape {table.shape}, but "
          f"clips.json lists {len(meta['clip_ids'])} clips of dim {meta['dim']}; run "
          "tools/embed_lyrics.py again")
    row_of = {c: i for i, c in enumerate(meta["clip_ids"])}
    self.dim = table.shape[1]
    rows = np.array([row_of.get(c, -1) for c in clip_ids])
    self.mask = (rows >= 0).astype(np.float32)
    self.vectors = np.where(rows[:, None] >= 0, table[np.maximum(rows, 0)], 0.0).astype(
        np.float32)


class Examples:
  """Random access to normalized examples and their labels (a Grain data source)."""

  def __init__(self, store: store_lib.Store, indices: np.ndarray, normalize: str,
               lyrics: Lyrics | None = None):
    self.store = store
    self.indices = np.asarray(indices, np.int64)
    self.normalize = normalize
    self.labels = {name: store.label_array(name) for name in store.label_values}
    self.lyrics = lyrics

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    j = int(self.indices[i])
    if self.store.manifest.get("kind") == "tokens":
      out = {"tokens": np.asarray(self.store.features[j], np.int32), "mask": np.float32(1.0)}
    else:
      x = store_lib.normalize(np.asarray(self.store.features[j], np.float32),
                              self.store.manifest["stats"], self.normalize)
      out = {"x": x.astype(np.float32), "mask": np.float32(1.0)}
    for name, values in self.labels.items():
      out[f"label_{name}"] = values[j]
    if self.lyrics is not None:
      out["lyrics"] = self.lyrics.vectors[j]
      out["lyrics_mask"] = self.lyrics.mask[j]
    return out


def data_spec(store: store_lib.Store, lyrics: Lyrics | None = None) -> DataSpec:
  return DataSpec(input_shape=store.shape,
                  labels={k: tuple(v) for k, v in store.label_values.items()},
                  lyrics_dim=lyrics.dim if lyrics is not None else 0)


def load_lyrics(config, store: store_lib.Store) -> Lyrics | None:
  if not config.data.lyrics_embeddings:
    return None
  clip_ids = [e["clip_id"] for e in store.manifest["examples"]]
  return Lyrics(config.data.lyrics_embeddings, clip_ids)


def split_examples(config, store, split: str, lyrics=None) -> Examples:
  return Examples(store, store.indices(split), config.data.normalize, lyrics)


def steps_per_epoch(examples: Examples, batch_size: int) -> int:
  if len(examples) < batch_size:
    raise readers.DataError(
        f"the training split has {len(examples)} examples, fewer than train.batch_size "
        f"{batch_size}; lower config key 'train.batch_size' or add data")
  return len(examples) // batch_size


def train_iterator(examples: Examples, batch_size: int, seed: int, config, *, shard: int = 0,
                   num_shards: int = 1):
  """An endless iterator of shuffled full batches, reshuffled each epoch; checkpointable.

  Multi-host: every process shuffles with the same seed, keeps the epoch's first
  steps x batch_size examples, and takes every `num_shards`-th from position `shard`, in
  batches of batch_size / num_shards: process p's k-th batch is its share of the same global
  batch k, disjoint from the others', and every process has the same number of steps.
  """
  if batch_size % num_shards:
    raise readers.DataError(f"train.batch_size {batch_size} does not divide over "
                            f"{num_shards} processes")
  used = steps_per_epoch(examples, batch_size) * batch_size
  ds = grain.MapDataset.source(examples).seed(seed).shuffle()[:used]
  if num_shards > 1:
    ds = ds[shard::num_shards]
  ds = ds.batch(batch_size // num_shards, drop_remainder=True).repeat(None)
  options = grain.ReadOptions(num_threads=config.data.read_threads,
                              prefetch_buffer_size=config.data.prefetch)
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
