"""The feature store: a dataset's features computed once, kept on disk, reused by every run.

A store is a folder named by a hash of the feature parameters and the file list:

    features.npy    float32 [N, n_features, frames], read as a memmap
    manifest.json   parameters, one row per example (clip id, segment, split, labels),
                    label vocabularies, normalization statistics, and every bad file with
                    its reason and what was done about it.

No pickle anywhere. Re-running preprocess with the same settings and files reuses the store;
changed settings or files make a new one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time

import numpy as np
import tqdm

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.audio import augment as augment_lib
from jaxvae.audio import decode as audio_lib
from jaxvae.data import featurize
from jaxvae.data import listing
from jaxvae.data import normalize as normalize_lib
from jaxvae.data import readers
from jaxvae.data import sources as sources_lib

_CHUNK = 32  # waveforms per feature call: one compiled shape, bounded memory.


def store_key(params: dict, items: list[readers.Item]) -> str:
  h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
  for item in items:
    try:
      st = os.stat(item.path)
      stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
      stamp = (-1, -1)
    h.update(json.dumps([item.clip_id, item.split, sorted(item.labels.items()), stamp]).encode())
  return h.hexdigest()[:16]


@dataclasses.dataclass
class Store:
  """An opened store: the interface the pipeline and the modes read, whatever the data.

  This class is the feature store (`features` a memmap [N, n_mels, frames] of dB or log1p
  features, normalized per example by `example`); `jaxvae.data.tokens.TokenStore` is the
  token store with the same interface. `manifest` holds `examples` (one row per example:
  clip_id, split, labels, augment), `bad` (every file left out, with its reason),
  `label_values` and `stats`.
  """

  path: str
  features: np.ndarray  # memmap [N, ...]
  manifest: dict

  def example(self, j: int, normalize: str) -> dict[str, np.ndarray]:
    """Row `j` as a batch row: `x` normalized float32 features, `mask` 1."""
    x = normalize_lib.normalize_features(
      np.asarray(self.features[j], np.float32), self.manifest["stats"], normalize
    )
    return {"x": x.astype(np.float32), "mask": np.float32(1.0)}

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(self.features.shape[1:])

  @property
  def label_values(self) -> dict[str, list[str]]:
    return self.manifest["label_values"]

  def indices(
    self, split: str | None = None, *, augmented: bool = True, source: str | None = None
  ) -> np.ndarray:
    """Example rows of a split (all when None), with or without augmented copies, of one
    source of a `data.sources` run (all when None)."""
    return np.array(
      [
        i
        for i, e in enumerate(self.manifest["examples"])
        if (split is None or e["split"] == split)
        and (augmented or not e.get("augment"))
        and (source is None or e.get("source") == source)
      ],
      np.int64,
    )

  @property
  def sources(self) -> dict[str, dict]:
    """Per-source summaries of a `data.sources` store (name -> layout, root, counts, labels);
    empty for a single dataset."""
    return self.manifest.get("sources", {})

  def source_array(self) -> np.ndarray:
    """int32 [N] index into `sources` of each example's source (0 for a single dataset)."""
    ids = {name: i for i, name in enumerate(self.sources)}
    return np.array([ids.get(e.get("source"), 0) for e in self.manifest["examples"]], np.int32)

  def label_array(self, name: str) -> np.ndarray:
    """int32 [N] class ids of one label column, -1 where unknown."""
    values = {v: i for i, v in enumerate(self.label_values[name])}
    return np.array(
      [values.get(e["labels"].get(name), -1) for e in self.manifest["examples"]], np.int32
    )

  @property
  def bad(self) -> list[dict]:
    return self.manifest["bad"]


def publish(tmp: str, path: str, manifest: dict, fault: str) -> None:
  """Writes `manifest.json` last into the finished temporary folder, then renames the folder
  to `path` in one step: a store with a manifest is always complete, and a build killed
  before this point leaves only a temporary folder (removed by the next build)."""
  with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(manifest, f)  # ASCII escapes: paths that are not valid UTF-8 round-trip too
    f.flush()
    os.fsync(f.fileno())
  faults.point(fault, tmp)
  workdir_lib.rename_into_place(tmp, path, "manifest.json")


def open_store(path: str) -> Store:
  with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  features = np.load(os.path.join(path, "features.npy"), mmap_mode="r", allow_pickle=False)
  return Store(path, features, manifest)


def build(config, *, progress: bool = True) -> Store:
  """Returns the store for `config`'s dataset and features, computing it when missing."""
  items = listing.list_dataset(config)
  params = featurize.feature_params(config)
  key = store_key(params, items)
  path = os.path.join(listing.cache_dir(config), "features", key)
  if os.path.exists(os.path.join(path, "manifest.json")):
    logging.info("Reusing feature store %s", path)
    return open_store(path)
  logging.info("Preprocessing %d files into %s", len(items), path)
  workdir_lib.remove_stale_tmp(path)
  tmp = workdir_lib.tmp_name(path)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with workdir_lib.removed_if_disk_full(tmp):
    return _build_into(config, items, params, key, path, tmp, progress)


def _build_into(config, items, params, key, path, tmp, progress) -> Store:
  start = time.time()
  rows, bad = _write_features(config, items, params, tmp, progress)
  if not rows:
    shutil.rmtree(tmp, ignore_errors=True)
    raise errors.DataError(
      f"no usable audio in data.root '{config.data.root or 'demo'}': all {len(items)} "
      f"files were bad ({_reason_counts(bad)})"
    )
  summaries = source_summaries(config, items, rows, bad) if sources_lib.is_combined(config) else {}
  for name, summary in summaries.items():
    if not summary["examples"]:
      logging.warning("Source %r gave no usable example (%d files)", name, summary["files"])
  manifest = {
    "version": featurize.STORE_VERSION,
    "key": key,
    "params": params,
    "dataset": (
      {"sources": list(summaries), "num_files": len(items)}
      if summaries
      else {"layout": config.data.layout, "root": config.data.root, "num_files": len(items)}
    ),
    **({"sources": summaries} if summaries else {}),
    "examples": rows,
    "bad": bad,
    "label_values": label_values(rows),
    "lyrics": {it.clip_id: it.lyrics for it in items if it.lyrics},
    "seconds_to_build": round(time.time() - start, 3),
  }
  manifest["stats"] = normalize_lib.statistics(
    np.load(os.path.join(tmp, "features.npy"), mmap_mode="r"), rows
  )
  publish(tmp, path, manifest, "store.commit")
  if bad:
    logging.warning(
      "%d of %d files were bad (%s); see %s",
      len(bad),
      len(items),
      _reason_counts(bad),
      os.path.join(path, "manifest.json"),
    )
  return open_store(path)


def decode_examples(item, config, on_error: str | None = None):
  """(examples, bad reason) of one file, cut as the store cuts it (`data.example_mode`,
  `seconds`, hop, minimum length; `on_error` default `data.on_error`)."""
  d = config.data
  return audio_lib.load_examples(
    item,
    sr=d.sr,
    mode=d.example_mode,
    seconds=d.seconds,
    hop_seconds=d.segment_hop_seconds or None,
    on_error=on_error or d.on_error,
    min_seconds=d.min_seconds,
  )


def _load_one(item, config):
  """(split, [(augment copy, waveform)], bad reason) of one file; copy 0 is the original."""
  d = config.data
  examples, reason = decode_examples(item, config)
  split = listing.split_of(item, d.val_fraction, d.split_seed)
  out = [(0, y) for y in examples]
  if split == "train" and d.augment.copies > 0 and not reason:
    kwargs = augment_lib.waveform_kwargs(config)
    for k in range(1, d.augment.copies + 1):
      for s, y in enumerate(examples):
        rng = augment_lib.clip_rng(d.augment.seed, f"{item.clip_id}#{s}", k)
        out.append((k, augment_lib.augment_waveform(y, d.sr, rng, **kwargs)))
  return split, out, reason


def _load_all(config, items):
  """Yields (item, split, examples, reason) in order, decoding files on a few threads."""
  load = functools.partial(_load_one, config=config)
  with concurrent.futures.ThreadPoolExecutor(max(1, config.data.read_threads)) as pool:
    for item, (split, examples, reason) in zip(items, pool.map(load, items)):
      yield item, split, examples, reason


def _write_features(config, items, params, out_dir, progress):
  """Streams features to a raw file in chunks, then wraps it as .npy (bounded memory)."""
  raw_path = os.path.join(out_dir, "features.raw")
  rows, bad, pending = [], [], []
  shape = None
  with open(raw_path, "wb") as raw:

    def flush():
      nonlocal shape
      if not pending:
        return
      n = len(pending)
      batch = np.stack(pending + [pending[-1]] * (_CHUNK - n))  # pad to the compiled shape
      feats = featurize.compute_features(batch, params)[:n]
      shape = feats.shape[1:]
      raw.write(np.ascontiguousarray(feats, np.float32).tobytes())
      raw.flush()
      pending.clear()
      faults.point("store.chunk", raw.name)

    bar = tqdm.tqdm(total=len(items), desc="preprocess", unit="file", disable=not progress)
    for item, split, examples, reason in _load_all(config, items):
      if reason:
        action = "skipped" if not examples else "silence"
        bad.append({"path": item.path, "clip_id": item.clip_id, "reason": reason, "action": action})
        if item.source:
          bad[-1]["source"] = item.source
        if len(bad) <= 10:  # the rest are counted below and all listed in the manifest
          logging.warning("bad file %s: %s (%s)", readers.printable(item.path), reason, action)
      segment = {}
      for copy, y in examples:
        k = segment[copy] = segment.get(copy, -1) + 1
        rows.append(
          {
            "clip_id": item.clip_id,
            "segment": k,
            "augment": copy,
            "split": split,
            "labels": dict(item.labels),
            "bad": reason,
            **({"source": item.source} if item.source else {}),
          }
        )
        pending.append(y)
        if len(pending) == _CHUNK:
          flush()
      bar.update(1)
    flush()
    bar.close()
  if rows:
    raw_arr = np.memmap(raw_path, np.float32, mode="r", shape=(len(rows), *shape))
    out = np.lib.format.open_memmap(
      os.path.join(out_dir, "features.npy"), mode="w+", dtype=np.float32, shape=raw_arr.shape
    )
    for i in range(0, len(rows), 1024):
      out[i : i + 1024] = raw_arr[i : i + 1024]
    out.flush()
    del out, raw_arr
  os.remove(raw_path)
  return rows, bad


def source_summaries(config, items, rows, bad) -> dict[str, dict]:
  """Per source of a `data.sources` run: where it is, its files, bad files (by reason),
  examples per split and its label values. (Weights are read from the config: they change
  the sampling, not the store.)"""
  out = {}
  for source in sources_lib.of_config(config):
    mine = [r for r in rows if r.get("source") == source.name]
    splits: dict[str, int] = {}
    for r in mine:
      splits[r["split"]] = splits.get(r["split"], 0) + 1
    its_bad = [b for b in bad if b.get("source") == source.name]
    out[source.name] = {
      "layout": source.layout,
      "root": source.root,
      "label_prefix": source.label_prefix,
      "files": sum(1 for it in items if it.source == source.name),
      "examples": len(mine),
      "splits": dict(sorted(splits.items())),
      "bad": len(its_bad),
      "bad_reasons": _reason_counts(its_bad),
      "label_values": label_values(mine),
    }
  return out


def label_values(rows) -> dict[str, list[str]]:
  values: dict[str, set] = {}
  for r in rows:
    for k, v in r["labels"].items():
      values.setdefault(k, set()).add(v)
  return {k: sorted(v) for k, v in sorted(values.items())}


def _reason_counts(bad) -> str:
  counts: dict[str, int] = {}
  for b in bad:
    counts[b["reason"]] = counts.get(b["reason"], 0) + 1
  return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
