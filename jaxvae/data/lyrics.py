"""The lyrics store: one embedding per clip from a text encoder (`jaxvae.text.lyrics`),
written by `tools/embed_lyrics.py` (`embed_dataset`) and read by a run (`load_lyrics`) as
`batch['lyrics']` aligned to the feature store's clips.

Files: `embeddings.npy` [N, D] float32 and `clips.json` ({clip_ids, model, pooling, dim,
missing}); `clips.json` is removed first and written last, so a store without it is an
interrupted write and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
import hashlib
import json
import os
import re
import time

import numpy as np

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.data import listing
from jaxvae.data import store as store_lib
from jaxvae.text import lyrics as text_lib


def write_embeddings(
  out_dir: str, clip_ids: Sequence[str], vectors: np.ndarray, *, info: dict
) -> None:
  """Writes `embeddings.npy` and `clips.json` (row i of the table is clip_ids[i]).

  `info` is recorded in clips.json next to `clip_ids` and `dim`; it should hold at least
  `model`, `pooling` and `missing` (clip ids without lyrics, which get no row). Each file is
  written under a temporary name and renamed, so a reader never sees a half-written table.
  """
  vectors = np.asarray(vectors, np.float32)
  clip_ids = list(clip_ids)
  if vectors.ndim != 2 or vectors.shape[0] != len(clip_ids):
    raise ValueError(
      f"vectors have shape {vectors.shape}; expected [{len(clip_ids)}, D] (one row per clip id)"
    )
  if len(set(clip_ids)) != len(clip_ids):
    raise ValueError("clip_ids repeat; each clip must have one row")
  if not np.all(np.isfinite(vectors)):
    raise ValueError("vectors contain NaN or inf")
  meta = {
    "clip_ids": clip_ids,
    "model": None,
    "pooling": None,
    "missing": [],
    **info,
    "dim": int(vectors.shape[1]),
  }
  os.makedirs(out_dir, exist_ok=True)
  emb_path = os.path.join(out_dir, "embeddings.npy")
  clips_path = os.path.join(out_dir, "clips.json")
  # clips.json is the commit marker: removed first, written last. A kill in between leaves a
  # store without it, which readers refuse rather than pairing new rows with old clip ids.
  if os.path.exists(clips_path):
    os.remove(clips_path)
  with workdir_lib.atomic_path(emb_path) as tmp, open(tmp, "wb") as f:
    np.save(f, vectors, allow_pickle=False)
  faults.point("lyrics.commit", emb_path)
  workdir_lib.write_json(clips_path, meta, indent=1)


# ----------------------------------------------------------------------------------------------
# A dataset's lyrics
# ----------------------------------------------------------------------------------------------


def default_out(config, model: str, pooling: str, clip_ids: list[str]) -> str:
  """A folder beside the feature store, named so that another model or dataset gets its own."""
  is_dir = os.path.isdir(model)
  # A packaged model's folder is often just 'model': its parent names it.
  name = "_".join(os.path.normpath(os.path.abspath(model)).split(os.sep)[-2:]) if is_dir else model
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
  key = [os.path.abspath(model) if is_dir else model, clip_ids]
  digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
  return os.path.join(listing.cache_dir(config), "lyrics", f"{name}-{pooling}-{digest}")


def embed_dataset(
  config, *, out: str, model: str, pooling: str, batch_size: int, max_length: int
) -> tuple[dict, list[str]]:
  """Embeds the lyrics of every clip of `config`'s dataset into `out`.

  Returns a summary (counts, dim, seconds, the folder) and the clip ids without lyrics.
  """
  model = os.fspath(model)  # a pathlib.Path (packaged models return one) is fine too
  start = time.time()
  items = listing.list_dataset(config)
  with_text = [it for it in items if it.lyrics and it.lyrics.strip()]
  have = {it.clip_id for it in with_text}
  missing = [it.clip_id for it in items if it.clip_id not in have]
  texts = [it.lyrics for it in with_text]
  if not texts:
    raise errors.DataError(
      f"none of the {len(items)} clips of data.root '{config.data.root or 'demo'}' has "
      f"lyrics (manifest column config key 'data.lyrics_column' = "
      f"'{config.data.lyrics_column}'); nothing to embed"
    )
  vectors = text_lib.embed_texts(
    texts, model, pooling=pooling, batch_size=batch_size, max_length=max_length
  )
  truncated = text_lib.count_truncated(texts, model, max_length=max_length)
  clip_ids = [it.clip_id for it in with_text]
  out = out or default_out(config, model, pooling, clip_ids)
  info = {
    "model": model,
    "pooling": pooling,
    "max_length": max_length,
    "missing": missing,
    "truncated": truncated,
    "dataset": {"layout": config.data.layout, "root": config.data.root},
  }
  write_embeddings(out, clip_ids, vectors, info=info)
  return {
    "out": os.path.abspath(out),
    "clips": len(items),
    "embedded": len(clip_ids),
    "missing": len(missing),
    "truncated": truncated,
    "dim": int(vectors.shape[1]),
    "model": model,
    "pooling": pooling,
    "seconds": round(time.time() - start, 2),
  }, missing


class Lyrics:
  """Lyrics embeddings aligned to a store's clip ids (from tools/embed_lyrics.py)."""

  def __init__(self, path: str, clip_ids: list[str]):
    emb_path = os.path.join(path, "embeddings.npy")
    if not os.path.exists(emb_path):
      raise errors.DataError(
        f"config key 'data.lyrics_embeddings': '{path}' has no "
        "embeddings.npy; make it with tools/embed_lyrics.py"
      )
    clips_path = os.path.join(path, "clips.json")
    if not os.path.exists(clips_path):  # written last: its absence means an interrupted write
      raise errors.DataError(
        f"config key 'data.lyrics_embeddings': '{path}' has no "
        "clips.json (an interrupted write?); run tools/embed_lyrics.py "
        "again"
      )
    table = np.load(emb_path, allow_pickle=False).astype(np.float32)
    with open(clips_path, encoding="utf-8") as f:
      meta = json.load(f)
    if table.ndim != 2 or table.shape != (len(meta["clip_ids"]), meta["dim"]):
      raise errors.DataError(
        f"config key 'data.lyrics_embeddings': '{emb_path}' has shape {table.shape}, but "
        f"clips.json lists {len(meta['clip_ids'])} clips of dim {meta['dim']}; run "
        "tools/embed_lyrics.py again"
      )
    row_of = {c: i for i, c in enumerate(meta["clip_ids"])}
    self.dim = table.shape[1]
    rows = np.array([row_of.get(c, -1) for c in clip_ids])
    self.mask = (rows >= 0).astype(np.float32)
    self.vectors = np.where(rows[:, None] >= 0, table[np.maximum(rows, 0)], 0.0).astype(np.float32)


def load_lyrics(config, store: store_lib.Store) -> Lyrics | None:
  if not config.data.lyrics_embeddings:
    return None
  clip_ids = [e["clip_id"] for e in store.manifest["examples"]]
  return Lyrics(config.data.lyrics_embeddings, clip_ids)
