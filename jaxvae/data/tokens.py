"""Symbolic data: MIDI files -> token ids (a `jaxvae.symbolic.tokenizers` tokenizer: the seed's
events or MidiTok's REMI / TSD / MIDI-Like, with a vocabulary learned on the training split when
`data.midi.vocab_size` asks for one) -> fixed windows in a token store.

Like the feature store, a token store is a folder keyed by a hash of the tokenizer settings
and the file list: `tokens.npy` (int32 [N, seq_len], PAD-filled) and `manifest.json` (one row
per window: piece, window index, split, augmentation, labels; every bad MIDI file with its
reason; `tokenizer`: the tokenizer's record, trained vocabulary included, and its fingerprint,
which every run of the store records and is checked against). `data.midi.window_start=bar`
starts every window after a piece's first on a bar line (MusicVAE's windows).

Layouts: `folder` (.mid/.midi searched recursively, sub-folder names as labels),
`maestro` (the csv's midi_filename and split), `chorales` (music21's bundled Bach chorales,
converted once into the cache: the built-in corpus).

Augmentation adds whole copies of each *training* piece (validation pieces are never
augmented), each copy one transformation of the original made before it is tokenized (the
events tokenizer moves its own tokens, MidiTok's the notes it reads), recorded in its rows'
`augment` (null for the original): `{"transpose": s}` for each of `data.midi.transpose`,
`{"tempo_stretch": f}` for each of `data.midi.tempo_stretch` (f > 1 is slower;
`midi.stretch_tempo`), and `data.midi.velocity_copies` copies `{"velocity_jitter": j, "copy":
k}` when `data.midi.velocity_jitter` = j > 0 (every VELOCITY token moved by up to j bins;
`midi.jitter_velocity`, seeded by `data.midi.augment_seed`, the piece and the copy, so a
build is reproducible and independent of file order).
"""

from __future__ import annotations

import csv
import functools
import glob
import json
import logging
import os
import zlib

import numpy as np
import tqdm

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.data import listing
from jaxvae.data import readers
from jaxvae.data import store as store_lib
from jaxvae.errors import ConfigError
from jaxvae.symbolic import midi
from jaxvae.symbolic import tokenizers

MIDI_EXTENSIONS = (".mid", ".midi")
WINDOW_STARTS = ("any", "bar")
TOKEN_STORE_VERSION = 3


def ensure_chorales(cache_dir: str, limit: int) -> str:
  """Writes music21's Bach chorales as .mid files once; returns the folder."""
  folder = os.path.join(cache_dir, "chorales", f"n{limit}")
  if os.path.exists(os.path.join(folder, "done.json")):
    return folder
  try:
    from music21 import corpus
    from music21 import repeat
    from music21.corpus import chorales
  except ImportError:
    raise errors.DataError(
      "data.layout 'chorales' needs music21 (pip install music21, or "
      "jaxvae[midi]); or point data.root at a folder of MIDI files "
      "with data.layout=folder"
    ) from None
  workdir_lib.remove_stale_tmp(folder)
  tmp = workdir_lib.tmp_name(folder)
  os.makedirs(tmp, exist_ok=True)
  names = list(dict.fromkeys(chorales.Iterator(returnType="filename")))[:limit]
  written = 0
  for name in names:
    score = corpus.parse(name)
    path = os.path.join(tmp, name.split("/")[-1] + ".mid")
    try:
      score.write("midi", fp=path)
      written += 1
    except repeat.ExpanderException:
      logging.warning("chorale %s: repeats cannot be expanded; skipped", name)
  with open(os.path.join(tmp, "done.json"), "w") as f:
    json.dump({"chorales": written}, f)
  faults.point("chorales.commit")
  workdir_lib.rename_into_place(tmp, folder, "done.json")
  return folder


def list_midi(config) -> list[readers.Item]:
  d = config.data
  if d.layout == "chorales":
    root = ensure_chorales(listing.cache_dir(config), d.midi.chorales)
    return readers.list_items("folder", root, extensions=MIDI_EXTENSIONS)
  if not d.root:
    raise errors.DataError(
      f"config key 'data.root' is empty; data.layout '{d.layout}' needs a dataset path"
    )
  if d.layout == "maestro":
    return _maestro_midi(d.root)
  if d.layout == "folder":
    return readers.list_items("folder", d.root, extensions=MIDI_EXTENSIONS)
  raise errors.DataError(
    f"config key 'data.layout' is '{d.layout}'; MIDI data uses folder, maestro or chorales"
  )


def _maestro_midi(root: str) -> list[readers.Item]:
  found = sorted(glob.glob(os.path.join(root, "maestro-v*.csv")))
  if not found:
    raise errors.DataError(f"data.root '{root}' has no maestro-v*.csv (expected MAESTRO v3)")
  items = []
  with open(found[-1], newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
      rel = row["midi_filename"]
      items.append(
        readers.Item(
          clip_id=rel,
          path=os.path.join(root, rel),
          labels={"composer": row["canonical_composer"]},
          split=row["split"],
          lyrics=None,
        )
      )
  return sorted(items, key=lambda it: it.clip_id)


def token_params(config) -> dict:
  d = config.data
  m = d.midi
  stretch = [float(f) for f in m.tempo_stretch]
  if any(not f > 0 for f in stretch):
    raise ConfigError(
      f"config key 'data.midi.tempo_stretch' is {tuple(m.tempo_stretch)!r}; "
      "expected factors > 0 (1.1 = 10% slower)"
    )
  for key in ("velocity_jitter", "velocity_copies"):
    if not isinstance(m[key], int) or m[key] < (key == "velocity_copies"):
      raise ConfigError(
        f"config key 'data.midi.{key}' is {m[key]!r}; expected an integer "
        f">= {int(key == 'velocity_copies')}"
      )
  window_start = m.get("window_start", "any")  # a run saved before the key existed: 'any'
  if window_start not in WINDOW_STARTS:
    raise ConfigError(
      f"config key 'data.midi.window_start' is {window_start!r}; expected one of {WINDOW_STARTS}"
    )
  tokenizer = tokenizers.settings(m)
  if stretch and tokenizer["kind"] != "events" and not tokenizer["tempos"]:
    raise ConfigError(
      f"config key 'data.midi.tempo_stretch' is {tuple(m.tempo_stretch)!r}, but "
      f"{tokenizer['kind']} places notes in beats and data.midi.miditok.tempos is False: every "
      "stretched copy would equal the original; set tempo_stretch=() or tempos=True"
    )
  return {
    "seq_len": m.seq_len,
    "overlap": m.overlap,
    "window_start": window_start,
    "transpose": list(m.transpose),
    "tempo_stretch": stretch,
    "velocity_jitter": m.velocity_jitter,
    "velocity_copies": m.velocity_copies if m.velocity_jitter else 0,
    "augment_seed": m.augment_seed,
    "tokenizer": tokenizer,
    "split": {"val_fraction": d.val_fraction, "seed": d.split_seed},
    "version": TOKEN_STORE_VERSION,
  }


def build(config, *, progress: bool = True):
  """Returns the token store for `config`'s MIDI dataset, tokenizing when missing."""
  items = list_midi(config)
  params = token_params(config)
  key = store_lib.store_key(params, items)
  path = os.path.join(listing.cache_dir(config), "tokens", key)
  if not os.path.exists(os.path.join(path, "manifest.json")):
    _write(config, items, params, key, path, progress)
  return open_store(path)


def augments(clip_id: str, params) -> list[tuple[dict | None, np.random.Generator | None]]:
  """(record, rng) of the original (None) and of each augmented copy of a training piece (see
  the module doc); the velocity jitter's rng is seeded by the piece and the copy."""
  out = [(None, None)]
  out += [({"transpose": shift}, None) for shift in params["transpose"]]
  out += [({"tempo_stretch": factor}, None) for factor in params["tempo_stretch"]]
  for k in range(params["velocity_copies"]):
    rng = np.random.default_rng([params["augment_seed"], zlib.crc32(clip_id.encode()), k])
    out.append(({"velocity_jitter": params["velocity_jitter"], "copy": k}, rng))
  return out


def piece_windows(encoded: tokenizers.Encoded, params) -> np.ndarray:
  """int32 [n, seq_len]: an encoded piece framed and cut as the store cuts it."""
  bars = encoded.bars if params.get("window_start") == "bar" else None
  return tokenizers.windows(encoded.ids, params["seq_len"], params["overlap"], bars)


def trained_tokenizer(config, items, params) -> tokenizers.Tokenizer:
  """The store's tokenizer: its vocabulary learned on the training split's files when
  `data.midi.vocab_size` asks for one (files it cannot read are left to the build to count)."""
  tok = tokenizers.make(params["tokenizer"])
  if params["tokenizer"].get("vocab_size"):
    d = config.data
    train = [
      it.path for it in items if listing.split_of(it, d.val_fraction, d.split_seed) == "train"
    ]
    tok.train(train)
  return tok


def _write(config, items, params, key, path, progress) -> None:
  tok = trained_tokenizer(config, items, params)
  rows, bad, arrays = [], [], []
  for item in tqdm.tqdm(items, desc="tokenize", unit="file", disable=not progress):
    split = listing.split_of(item, config.data.val_fraction, config.data.split_seed)
    copies = augments(item.clip_id, params) if split == "train" else [(None, None)]
    try:
      piece = tok.load(item.path)
      pieces = [(record, tok.encode(piece, record, rng)) for record, rng in copies]
    except errors.MidiError as e:
      bad.append(
        {"path": item.path, "clip_id": item.clip_id, "reason": e.reason, "action": "skipped"}
      )
      continue
    for record, encoded in pieces:
      win = piece_windows(encoded, params)
      arrays.append(win)
      rows += [
        {
          "clip_id": item.clip_id,
          "segment": k,
          "augment": record,
          "split": split,
          "labels": dict(item.labels),
          "bad": None,
        }
        for k in range(len(win))
      ]
  if not rows:
    raise errors.DataError(f"no usable MIDI file among {len(items)} ({len(bad)} bad)")
  workdir_lib.remove_stale_tmp(path)
  tmp = workdir_lib.tmp_name(path)
  os.makedirs(tmp, exist_ok=True)
  with workdir_lib.removed_if_disk_full(tmp):
    np.save(os.path.join(tmp, "tokens.npy"), np.concatenate(arrays).astype(np.int32))
    manifest = {
      "kind": "tokens",
      "version": TOKEN_STORE_VERSION,
      "key": key,
      "params": params,
      "tokenizer": {"record": tok.record, "fingerprint": tok.fingerprint},
      "examples": rows,
      "bad": bad,
      "label_values": store_lib.label_values(rows),
      "dataset": {"layout": config.data.layout, "root": config.data.root, "num_files": len(items)},
      "stats": {},
    }
    store_lib.publish(tmp, path, manifest, "tokens.commit")
  if bad:
    logging.warning(
      "%d of %d MIDI files were bad and skipped; see %s",
      len(bad),
      len(items),
      os.path.join(path, "manifest.json"),
    )


class TokenStore(store_lib.Store):
  """A token store: `features` are the int32 token windows [N, seq_len]; `tokenizer` the
  tokenizer that made them (trained vocabulary included)."""

  @functools.cached_property
  def tokenizer(self) -> tokenizers.Tokenizer:
    return tokenizers.make(tokenizer_record(self.manifest))

  def example(self, j: int, normalize: str) -> dict[str, np.ndarray]:
    del normalize  # token ids are not normalized
    return {"tokens": np.asarray(self.features[j], np.int32), "mask": np.float32(1.0)}


def tokenizer_record(manifest_or_data: dict) -> dict:
  """The tokenizer record a token store's manifest (or a run file's `data`) holds; stores and
  runs from before tokenizers were chosen used the events."""
  found = manifest_or_data.get("tokenizer")
  return found["record"] if found else {"kind": "events", "vocab": midi.DEFAULT.size}


def tokenizer_fingerprint(manifest_or_data: dict) -> str:
  """The fingerprint recorded with the tokenizer when the store was built (not recomputed)."""
  found = manifest_or_data.get("tokenizer")
  if found:
    return found["fingerprint"]
  return tokenizers.fingerprint(tokenizer_record(manifest_or_data))


def open_store(path: str) -> TokenStore:
  """A token store opened as a `TokenStore`."""
  with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  tokens = np.load(os.path.join(path, "tokens.npy"), mmap_mode="r", allow_pickle=False)
  return TokenStore(path, tokens, manifest)
