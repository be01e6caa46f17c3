"""The run's clips: where the cache lives, which dataset(s) the config names (the demo corpus
generated on first use), every clip with its labels, and each clip's split."""

from __future__ import annotations

import dataclasses
import hashlib
import os

from jaxvae import errors
from jaxvae.data import demo as demo_lib
from jaxvae.data import readers
from jaxvae.data import sources as sources_lib


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


def split_of(item: readers.Item, val_fraction: float, seed: int) -> str:
  """The item's own split when the layout has one, else a seeded hash of its clip id."""
  if item.split:
    return {"valid": "validation", "val": "validation", "dev": "validation"}.get(
      item.split, item.split
    )
  digest = hashlib.sha256(f"{seed}:{item.clip_id}".encode()).digest()
  return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"
