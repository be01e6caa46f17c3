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

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.audio import augment as augment_lib
from jaxvae.audio import decode as audio_lib
from jaxvae.audio import features
from jaxvae.data import demo as demo_lib
from jaxvae.data import readers
from jaxvae.data import sources as sources_lib

STORE_VERSION = 1
_CHUNK = 32  # waveforms per feature call: one compiled shape, bounded memory.


def cache_dir(config) -> str:
  return (
    config.data.cache_dir
    or os.environ.get("JAXVAE_CACHE")
    or os.path.join(os.path.expanduser("~"), ".cache", "jaxvae")
  )


def resolve_dataset(config, source: sources_lib.Source | None = None) -> tuple[str, str]:
  """(layout, root) to read for `source` (default: the config's single dataset); the demo
  layout is a generated manifest dataset."""
  d = config.data
  source = source or sources_lib.of_config(config)[0]
  if source.layout != "demo":
    if not source.root:
      raise errors.DataError(
        f"config key 'data.root' is empty; data.layout '{source.layout}' "
        "needs a dataset path (--config.data.root=PATH)"
      )
    return source.layout, source.root
  csv_path = demo_lib.ensure_corpus(
    cache_dir(config),
    seconds=d.seconds,
    sr=d.sr,
    clips_per_class=d.demo.clips_per_class,
    seed=d.demo.seed,
  )
  return "manifest", csv_path


def feature_params(config) -> dict:
  """Everything that changes what a store holds, its arrays and the statistics in its
  manifest (and nothing that does not)."""
  d = config.data
  return {
    "sr": d.sr,
    "n_fft": d.n_fft,
    "hop_length": d.hop_length,
    "n_mels": d.n_mels,
    "feature": d.feature,
    "n_mfcc": d.n_mfcc,
    "scale": d.scale,
    "seconds": d.seconds,
    "example_mode": d.example_mode,
    "segment_hop_seconds": d.segment_hop_seconds,
    "on_error": d.on_error,
    "min_seconds": d.min_seconds,
    "version": STORE_VERSION,
    # Only when not the default, so that existing stores keep their keys.
    # (`get`: a run saved before the key existed was made with 'absolute'.)
    **({"db_reference": "peak"} if d.get("db_reference", "absolute") == "peak" else {}),
    # 'band' reads per-band statistics that stores made before it lack: its own store.
    **({"normalize": "band"} if d.normalize == "band" else {}),
    # Only when used, so stores made without augmentation keep their keys.
    **({"augment": json.loads(d.augment.to_json())} if d.augment.copies > 0 else {}),
    "split": {"val_fraction": d.val_fraction, "seed": d.split_seed},
  }


def _labels_wanted(config) -> list[str] | None:
  names = [n.strip() for n in config.data.label_columns.split(",") if n.strip()]
  return names or None


def list_dataset(config) -> list[readers.Item]:
  """Every clip of the run's dataset, or of all its `data.sources`: there each clip id starts
  with `<source name>/`, label values with the source's `label_prefix`, and every clip has
  the label `source`."""
  d = config.data
  wanted = _labels_wanted(config)
  if not sources_lib.is_combined(config):
    layout, root = resolve_dataset(config)
    return readers.list_items(
      layout, root, audio_column=d.audio_column, lyrics_column=d.lyrics_column, label_columns=wanted
    )
  items = []
  for i, source in enumerate(sources_lib.of_config(config)):
    layout, root = resolve_dataset(config, source)
    try:
      listed = readers.list_items(
        layout, root, audio_column=d.audio_column, lyrics_column=d.lyrics_column
      )
    except errors.DataError as e:
      raise errors.DataError(f"data.sources[{i}] ({source.name!r}): {e}") from None
    for it in listed:
      labels = {k: source.label_prefix + v for k, v in it.labels.items()}
      labels["source"] = source.name
      items.append(
        dataclasses.replace(
          it, clip_id=f"{source.name}/{it.clip_id}", labels=labels, source=source.name
        )
      )
  if wanted:
    have = {k for it in items for k in it.labels}
    missing = [n for n in wanted if n not in have]
    if missing:
      raise errors.DataError(
        f"data.label_columns asks for {', '.join(map(repr, missing))}, but no source has "
        f"it; the sources' labels: {', '.join(sorted(have))}"
      )
    keep = set(wanted) | {"source"}
    items = [
      dataclasses.replace(it, labels={k: v for k, v in it.labels.items() if k in keep})
      for it in items
    ]
  return sorted(items, key=lambda it: it.clip_id)


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


AMIN, TOP_DB = 1e-10, 80.0  # librosa's power_to_db defaults
SILENCE_REF = AMIN * 10.0 ** (TOP_DB / 10.0)  # under 'peak', silence sits at -TOP_DB


@functools.lru_cache(maxsize=8)
def _feature_fn(params_json: str):
  """A jitted waveform batch -> feature batch function for one parameter set."""
  p = json.loads(params_json)
  common = dict(sr=p["sr"], n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"])

  peak = p.get("db_reference", "absolute") == "peak"

  def db(power):
    # 'peak': each example's loudest bin is 0 dB (librosa's ref=np.max), so the features do
    # not depend on the recording's level. Except silence (a bad file's stand-in): by
    # librosa's rule it would be 0 dB everywhere, as loud as anything; its reference is
    # SILENCE_REF instead, which puts it at the floor, -TOP_DB.
    ref = 1.0
    if peak:
      top = power.max(axis=(-2, -1), keepdims=True)
      ref = jnp.where(top > AMIN, top, SILENCE_REF)
    return features.power_to_db(power, ref=ref, amin=AMIN, top_db=TOP_DB)

  @jax.jit
  def fn(y):
    if p["feature"] == "mfcc":
      mel = features.mel_spectrogram(y, power=2.0, norm="slaney", **common)
      return features.mfcc(S=db(mel), sr=p["sr"], n_mfcc=p["n_mfcc"])
    power = features.mel_spectrogram(y, power=2.0, **common)
    if p["scale"] == "log1p":
      return jnp.log1p(power)
    return db(power)

  return fn


def compute_features(waves: np.ndarray, params: dict) -> np.ndarray:
  """[B, samples] float32 -> [B, n_features, frames] float32, on the default JAX device."""
  return np.asarray(_feature_fn(json.dumps(params, sort_keys=True))(waves), np.float32)


def split_of(item: readers.Item, val_fraction: float, seed: int) -> str:
  """The item's own split when the layout has one, else a seeded hash of its clip id."""
  if item.split:
    return {"valid": "validation", "val": "validation", "dev": "validation"}.get(
      item.split, item.split
    )
  digest = hashlib.sha256(f"{seed}:{item.clip_id}".encode()).digest()
  return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


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
    x = normalize_features(
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
  items = list_dataset(config)
  params = feature_params(config)
  key = store_key(params, items)
  path = os.path.join(cache_dir(config), "features", key)
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
    "version": STORE_VERSION,
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
  manifest["stats"] = _stats(np.load(os.path.join(tmp, "features.npy"), mmap_mode="r"), rows)
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


def _load_one(item, config):
  """(split, [(augment copy, waveform)], bad reason) of one file; copy 0 is the original."""
  d = config.data
  examples, reason = audio_lib.load_examples(
    item,
    sr=d.sr,
    mode=d.example_mode,
    seconds=d.seconds,
    hop_seconds=d.segment_hop_seconds or None,
    on_error=d.on_error,
    min_seconds=d.min_seconds,
  )
  split = split_of(item, d.val_fraction, d.split_seed)
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
      feats = compute_features(batch, params)[:n]
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


def _stats(features: np.ndarray, rows) -> dict:
  """Normalization statistics from the training split only (no peeking at validation)."""
  train = [
    i for i, r in enumerate(rows) if r["split"] == "train" and not r["bad"] and not r.get("augment")
  ]
  train = train or list(range(len(rows)))
  total, sq, count, mins, maxs = 0.0, 0.0, 0, [], []
  band_total, band_sq, band_count = 0.0, 0.0, 0  # per band: features are [..., bands, frames]
  for i in range(0, len(train), 256):
    x = np.asarray(features[train[i : i + 256]], np.float64)
    total += x.sum()
    sq += np.square(x).sum()
    count += x.size
    mins.append(x.reshape(len(x), -1).min(1))
    maxs.append(x.reshape(len(x), -1).max(1))
    rest = tuple(a for a in range(x.ndim) if a != x.ndim - 2)  # [N, bands, frames]
    band_total = band_total + x.sum(axis=rest)
    band_sq = band_sq + np.square(x).sum(axis=rest)
    band_count += x.size // x.shape[-2]
  mean = total / count
  band_mean = band_total / band_count
  band_var = np.maximum(band_sq / band_count - band_mean**2, 0.0)
  return {
    "mean": mean,
    "std": float(np.sqrt(max(sq / count - mean**2, 1e-12))),
    "min_mean": float(np.concatenate(mins).mean()),
    "max_mean": float(np.concatenate(maxs).mean()),
    "band_mean": band_mean.tolist(),
    # A band that (nearly) never varies, such as a mel band above the content, is centred,
    # not scaled up: relative to the bands' mean variance, whatever the feature's units.
    "band_std": np.where(
      band_var > BAND_VAR_FLOOR * max(float(band_var.mean()), 1e-30), np.sqrt(band_var), 1.0
    ).tolist(),
  }


BAND_VAR_FLOOR = 1e-6  # of the bands' mean variance


def _band(stats: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The per-band mean and std (float32) shaped to broadcast over features `x` [..., bands,
  frames]."""
  if "band_mean" not in stats:
    raise errors.DataError(
      "config key 'data.normalize' is 'band', but these feature statistics have no per-band "
      "values (the store or run was made before 'band' existed): rebuild the store with "
      "--mode=preprocess, or use data.normalize=global"
    )
  bands = len(stats["band_mean"])
  if x.ndim < 2 or x.shape[-2] != bands:
    raise errors.DataError(
      f"features of shape {list(x.shape)} for data.normalize='band': expected [..., {bands} "
      "bands, frames] (the store's band count)"
    )
  shape = [1] * x.ndim
  shape[-2] = bands
  mean, std = (np.asarray(stats[k], np.float32).reshape(shape) for k in ("band_mean", "band_std"))
  return mean, std


def _reason_counts(bad) -> str:
  counts: dict[str, int] = {}
  for b in bad:
    counts[b["reason"]] = counts.get(b["reason"], 0) + 1
  return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def normalize_features(x: np.ndarray, stats: dict, method: str) -> np.ndarray:
  """Applied the same way at train, eval and generation time."""
  if method == "global":
    return (x - stats["mean"]) / stats["std"]
  if method == "band":
    mean, std = _band(stats, x)
    return ((x - mean) / std).astype(x.dtype, copy=False)
  if method == "minmax":  # per example, as seed 004 should have done (not per batch)
    axes = tuple(range(1, x.ndim)) if x.ndim > 2 else None
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-8)
  return x


def denormalize(x: np.ndarray, stats: dict, method: str) -> np.ndarray:
  """Back to feature units; min-max uses the training set's mean range."""
  if method == "global":
    return x * stats["std"] + stats["mean"]
  if method == "band":
    mean, std = _band(stats, x)
    return (x * std + mean).astype(x.dtype, copy=False)
  if method == "minmax":
    return x * (stats["max_mean"] - stats["min_mean"]) + stats["min_mean"]
  return x
