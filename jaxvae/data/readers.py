"""Dataset layouts on disk -> a sorted list of `Item`s.

One public entry point, `list_items(layout, root, ...)`, picks a reader by layout name:

- `gtzan`: root holds `genres_original/` (Kaggle) or `genres/` (marsyas), or is that folder;
  `<genre>/<genre>.000NN.wav` -> labels {genre}; no split.
- `maestro`: root holds `maestro-v*.csv` -> the audio side of each row; labels {composer, year};
  split from the csv.
- `speech_commands`: `<word>/<speaker>_nohash_<n>.wav` -> labels {word}; split from
  `validation_list.txt` / `testing_list.txt`; `_background_noise_/` is not a word.
- `folder`: any tree; the first-level sub-folder is labels {label}; no split.
- `manifest`: a CSV (or a folder with `manifest.csv`): an audio path column, optional `split`
  and lyrics columns, every other column a label.

Readers only look at names on disk; they never decode audio (that is `jaxvae.audio.decode`'s job),
so listing a large dataset is fast and a corrupt file is reported later, with a reason,
by the loader or by `jaxvae.audio.decode.validate_items`.

Every problem with the dataset as a whole (missing root, wrong kind of root, no audio,
missing CSV column, unknown layout) raises `DataError` with a message that names the path
or config key and says what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import csv
import dataclasses
import os
import re

from jaxvae.errors import DataError

# Formats libsndfile reads (plus those the audioread fallback may read). Lower case, with dot.
AUDIO_EXTENSIONS: tuple[str, ...] = (
  ".wav",
  ".flac",
  ".ogg",
  ".oga",
  ".opus",
  ".mp3",
  ".aif",
  ".aiff",
  ".au",
  ".m4a",
)

LAYOUTS: tuple[str, ...] = ("gtzan", "maestro", "speech_commands", "folder", "manifest")

# Spellings of split names seen in hand-made manifests, mapped to the three the pipeline uses.
_SPLIT_ALIASES = {
  "train": "train",
  "training": "train",
  "validation": "validation",
  "valid": "validation",
  "val": "validation",
  "dev": "validation",
  "test": "test",
  "testing": "test",
  "eval": "test",
}


@dataclasses.dataclass(frozen=True)
class Item:
  """One audio clip of a dataset.

  Attributes:
    clip_id: path relative to the dataset root with '/' separators; stable and unique.
    path: absolute path of the audio file.
    labels: label name -> value, e.g. {'genre': 'jazz'}; a missing label is absent.
    split: 'train', 'validation', 'test', or None when the dataset defines no split.
    lyrics: lyrics text, or None.
    source: the name of its `data.sources` entry, or None for a single-dataset run.
  """

  clip_id: str
  path: str
  labels: dict[str, str] = dataclasses.field(default_factory=dict)
  split: str | None = None
  lyrics: str | None = None
  source: str | None = None


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def list_items(
  layout: str,
  root: str,
  *,
  audio_column: str = "audio",
  lyrics_column: str = "lyrics",
  label_columns: Sequence[str] | None = None,
  extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> list[Item]:
  """Lists the clips of a dataset, sorted by `clip_id`.

  Args:
    layout: one of `LAYOUTS`.
    root: dataset folder, or the CSV file for `manifest`.
    audio_column: manifest column holding audio paths.
    lyrics_column: manifest column holding lyrics (a text file path or the text itself).
    label_columns: which labels to keep (all when None). For `manifest` these are column
      names; for the other layouts they must be among the labels the layout defines.
    extensions: file name endings counted as audio when scanning folders (case-insensitive).

  Raises:
    DataError: unknown layout, missing or wrong-kind root, no audio, bad manifest.
  """
  readers: dict[str, Callable[[], list[Item]]] = {
    "gtzan": lambda: _read_gtzan(root, extensions),
    "maestro": lambda: _read_maestro(root),
    "speech_commands": lambda: _read_speech_commands(root, extensions),
    "folder": lambda: _read_folder(root, extensions),
    "manifest": lambda: _read_manifest(root, audio_column, lyrics_column, label_columns),
  }
  if layout not in readers:
    raise DataError(f"unknown data.layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
  items = [_printable(it) for it in readers[layout]()]
  if label_columns is not None and layout != "manifest":
    items = _keep_labels(items, label_columns, layout)
  _check_unique(items, root)
  return sorted(items, key=lambda it: it.clip_id)


def printable(text: str) -> str:
  """A file name that is not valid UTF-8 (undecodable bytes, kept by Python as surrogates) with
  those bytes written as \\xNN, so it can go into JSON, logs and hashes."""
  return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _printable(item: Item) -> Item:
  """The item with a printable clip id and labels; its path stays the real one, to open."""
  labels = {k: printable(v) for k, v in item.labels.items()}
  return dataclasses.replace(item, clip_id=printable(item.clip_id), labels=labels)


# ----------------------------------------------------------------------------------------------
# Layout readers
# ----------------------------------------------------------------------------------------------


def _read_gtzan(root: str, extensions: Sequence[str]) -> list[Item]:
  """`<genre>/<genre>.000NN.wav` under `genres_original/` (Kaggle) or `genres/` (marsyas .au)."""
  _require_dir(root, "gtzan")
  base = root
  for name in ("genres_original", "genres"):
    if os.path.isdir(os.path.join(root, name)):
      base = os.path.join(root, name)
      break
  items = [
    Item(clip_id=rel, path=os.path.abspath(path), labels={"genre": rel.split("/")[0]})
    for rel, path in _walk_audio(base, extensions)
    if "/" in rel  # files beside the genre folders have no genre
  ]
  _require_nonempty(items, base, "gtzan", extensions)
  return items


def _read_maestro(root: str) -> list[Item]:
  """MAESTRO's metadata CSV; the audio side of each row (`audio_filename`)."""
  _require_dir(root, "maestro")
  csv_path = _find_maestro_csv(root)
  rows, columns = _read_csv(csv_path)
  needed = ("canonical_composer", "year", "split", "audio_filename")
  for col in needed:
    if col not in columns:
      raise DataError(
        f"maestro csv {csv_path!r} has no column {col!r} (columns: {', '.join(columns)})"
      )
  items = []
  for row in rows:
    rel = _clean_rel(row["audio_filename"])
    if not rel:
      continue
    labels = {"composer": row["canonical_composer"].strip(), "year": _year(row["year"])}
    items.append(
      Item(
        clip_id=rel,
        path=os.path.abspath(os.path.join(root, rel)),
        labels={k: v for k, v in labels.items() if v},
        split=_split_name(row["split"], csv_path),
      )
    )
  _require_some_exist(items, csv_path)
  return items


def _read_speech_commands(root: str, extensions: Sequence[str]) -> list[Item]:
  """`<word>/<speaker>_nohash_<n>.wav`; splits from `validation_list.txt` / `testing_list.txt`.

  Folders starting with '_' (`_background_noise_`) hold noise, not words, and are skipped.
  When neither list file exists the split is None (so the pipeline splits by seed) rather
  than 'train' for everything, which would leave no held-out data.
  """
  _require_dir(root, "speech_commands")
  val = _read_list(os.path.join(root, "validation_list.txt"))
  test = _read_list(os.path.join(root, "testing_list.txt"))
  has_lists = val is not None or test is not None
  val, test = val or set(), test or set()
  items = []
  for rel, path in _walk_audio(root, extensions):
    word = rel.split("/")[0]
    if "/" not in rel or word.startswith("_"):
      continue
    split = None
    if has_lists:
      split = "validation" if rel in val else "test" if rel in test else "train"
    items.append(Item(clip_id=rel, path=os.path.abspath(path), labels={"word": word}, split=split))
  _require_nonempty(items, root, "speech_commands", extensions)
  return items


def _read_folder(root: str, extensions: Sequence[str]) -> list[Item]:
  """Any folder tree; the first-level sub-folder name is the class label."""
  _require_dir(root, "folder")
  items = []
  for rel, path in _walk_audio(root, extensions):
    labels = {"label": rel.split("/")[0]} if "/" in rel else {}
    items.append(Item(clip_id=rel, path=os.path.abspath(path), labels=labels))
  _require_nonempty(items, root, "folder", extensions)
  return items


def _read_manifest(
  root: str, audio_column: str, lyrics_column: str, label_columns: Sequence[str] | None
) -> list[Item]:
  """A CSV with one row per clip: audio path, optional split and lyrics, label columns."""
  csv_path = _manifest_path(root)
  base = os.path.dirname(os.path.abspath(csv_path))
  rows, columns = _read_csv(csv_path)
  if audio_column not in columns:
    raise DataError(
      f"manifest {csv_path!r} has no column {audio_column!r} (columns: {', '.join(columns)})"
    )
  label_cols = _manifest_label_columns(
    csv_path, columns, audio_column, lyrics_column, label_columns
  )
  items = []
  for line, row in enumerate(rows, start=2):  # line 1 is the header
    audio = (row.get(audio_column) or "").strip()
    if not audio:
      raise DataError(f"manifest {csv_path!r} line {line}: empty {audio_column!r} cell")
    path = os.path.abspath(os.path.join(base, os.path.expanduser(audio)))
    labels = {c: row[c].strip() for c in label_cols if (row.get(c) or "").strip()}
    split = row.get("split") if "split" in columns else None
    items.append(
      Item(
        clip_id=_clip_id(path, base),
        path=path,
        labels=labels,
        split=_split_name(split, f"{csv_path}:{line}"),
        lyrics=_lyrics(row.get(lyrics_column), base, csv_path, line),
      )
    )
  if not items:
    raise DataError(f"manifest {csv_path!r} has a header but no rows; expected one row per clip")
  _require_some_exist(items, csv_path)
  return items


# ----------------------------------------------------------------------------------------------
# Helpers: roots and emptiness
# ----------------------------------------------------------------------------------------------


def _require_dir(root: str, layout: str) -> None:
  if not os.path.exists(root):
    raise DataError(f"data.root {root!r} does not exist")
  if not os.path.isdir(root):
    raise DataError(f"data.root {root!r} is a file; layout {layout!r} expects a directory")


def _require_nonempty(items: list[Item], root: str, layout: str, extensions: Sequence[str]) -> None:
  if not items:
    raise DataError(
      f"no audio files ({', '.join(e.lstrip('.') for e in extensions)}) found "
      f"under data.root {root!r} for layout {layout!r}"
    )


def _require_some_exist(items: list[Item], csv_path: str) -> None:
  """Rows whose file is missing are kept (the loader counts them as 'missing'), but a table
  that points at no existing file at all is almost certainly a wrong root."""
  if not items:
    raise DataError(f"{csv_path!r} lists no audio files; expected one row per clip")
  if not any(os.path.isfile(it.path) for it in items):
    raise DataError(
      f"none of the {len(items)} audio files listed in {csv_path!r} exist "
      f"(first expected at {items[0].path!r})"
    )


def _check_unique(items: list[Item], root: str) -> None:
  seen: set[str] = set()
  for it in items:
    if it.clip_id in seen:
      raise DataError(
        f"{root!r} lists the audio file {it.clip_id!r} more than once; expected each clip once"
      )
    seen.add(it.clip_id)


def _keep_labels(items: list[Item], names: Sequence[str], layout: str) -> list[Item]:
  available = sorted({k for it in items for k in it.labels})
  for name in names:
    if name not in available:
      raise DataError(
        f"data.label_columns asks for {name!r}, but layout {layout!r} has "
        f"labels: {', '.join(available) or '(none)'}"
      )
  return [
    dataclasses.replace(it, labels={k: v for k, v in it.labels.items() if k in names})
    for it in items
  ]


# ----------------------------------------------------------------------------------------------
# Helpers: folders
# ----------------------------------------------------------------------------------------------


def _walk_audio(base: str, extensions: Sequence[str]) -> Iterable[tuple[str, str]]:
  """Yields (path relative to base with '/', path) for audio files below base.

  Hidden files and folders are skipped (macOS `._x.wav` forks are not audio). Symlinked
  folders are followed once, so a link loop cannot hang the scan.
  """
  exts = tuple(e.lower() for e in extensions)
  visited: set[str] = set()
  for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in visited:
      dirnames[:] = []
      continue
    visited.add(real)
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      if name.startswith(".") or not name.lower().endswith(exts):
        continue
      path = os.path.join(dirpath, name)
      yield os.path.relpath(path, base).replace(os.sep, "/"), path


def _read_list(path: str) -> set[str] | None:
  """Speech Commands split list: one relative path per line; None when the file is absent."""
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return {_clean_rel(line) for line in f if line.strip()}


def _clean_rel(rel: str) -> str:
  """Relative paths from text files may use '\\' or start with './'."""
  rel = rel.strip().replace("\\", "/")
  while rel.startswith("./"):
    rel = rel[2:]
  return rel


def _clip_id(path: str, base: str) -> str:
  """Path relative to the manifest folder; absolute paths outside it keep their full path."""
  rel = os.path.relpath(path, base)
  if rel == os.pardir or rel.startswith(os.pardir + os.sep):
    rel = path
  return rel.replace(os.sep, "/")


# ----------------------------------------------------------------------------------------------
# Helpers: CSV files
# ----------------------------------------------------------------------------------------------


def _find_maestro_csv(root: str) -> str:
  """The newest `maestro-v*.csv` in root (v3.0.0 sorts after v2.0.0 by version numbers)."""
  names = [n for n in os.listdir(root) if re.fullmatch(r"maestro-v[\d.]+\.csv", n)]
  if not names:
    raise DataError(
      f"data.root {root!r} has no 'maestro-v*.csv' (e.g. maestro-v3.0.0.csv); "
      "expected the MAESTRO folder with its metadata CSV"
    )
  version = lambda n: tuple(int(p) for p in re.findall(r"\d+", n))
  return os.path.join(root, max(names, key=version))


def _manifest_path(root: str) -> str:
  if not os.path.exists(root):
    raise DataError(f"data.root {root!r} does not exist")
  if os.path.isdir(root):
    candidate = os.path.join(root, "manifest.csv")
    if os.path.isfile(candidate):
      return candidate
    raise DataError(
      f"data.root {root!r} is a directory without 'manifest.csv'; "
      "layout 'manifest' expects a CSV file"
    )
  return root


def _read_csv(path: str) -> tuple[list[dict[str, str]], list[str]]:
  """Rows as dicts with stripped header names; 'utf-8-sig' drops a spreadsheet's BOM."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = [h.strip() for h in next(reader, [])]
      rows = [dict(zip(header, r)) for r in reader if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"cannot read CSV {path!r}: {e}") from e
  if not header:
    raise DataError(f"CSV {path!r} is empty; expected a header row")
  return rows, header


def _manifest_label_columns(
  csv_path: str,
  columns: list[str],
  audio_column: str,
  lyrics_column: str,
  label_columns: Sequence[str] | None,
) -> list[str]:
  if label_columns is None:
    return [c for c in columns if c and c not in (audio_column, lyrics_column, "split")]
  for c in label_columns:
    if c not in columns:
      raise DataError(
        f"manifest {csv_path!r} has no label column {c!r} (columns: {', '.join(columns)})"
      )
  return list(label_columns)


def _split_name(value: str | None, where: str) -> str | None:
  value = (value or "").strip().lower()
  if not value:
    return None
  if value not in _SPLIT_ALIASES:
    raise DataError(f"{where}: unknown split {value!r}; expected train, validation or test")
  return _SPLIT_ALIASES[value]


def _year(value: str) -> str:
  """'2018' or '2018.0' (a CSV written from pandas floats) -> '2018'."""
  value = (value or "").strip()
  try:
    return str(int(float(value)))
  except ValueError:
    return value


def _lyrics(value: str | None, base: str, csv_path: str, line: int) -> str | None:
  """A lyrics cell is a text file path (relative to the manifest) or the lyrics themselves."""
  value = (value or "").strip()
  if not value:
    return None
  looks_like_path = "\n" not in value and len(value) < 4096
  if looks_like_path:
    path = os.path.join(base, os.path.expanduser(value))
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        return f.read().strip() or None
    # A dangling '*.txt' is a broken reference, not lyrics; reading it as text would train
    # on a file name.
    if value.lower().endswith(".txt") and " " not in value:
      raise DataError(f"manifest {csv_path!r} line {line}: lyrics file {path!r} does not exist")
  return value
