"""Dataset layout readers: labels, splits, clip ids, exclusions and error messages.

Readers never decode audio, so most fake datasets here are empty files with audio names.
"""

import os

import pytest

from jaxvae.data import readers
from jaxvae.data.readers import DataError
from jaxvae.data.readers import Item
from jaxvae.data.readers import list_items


def _touch(root, *rels, content=b""):
  for rel in rels:
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


# ----------------------------------------------------------------------------------------------
# gtzan
# ----------------------------------------------------------------------------------------------


def _gtzan(tmp_path):
  base = tmp_path / "Data" / "genres_original"
  _touch(
    base,
    "rock/rock.00001.wav",
    "jazz/jazz.00054.wav",
    "jazz/jazz.00000.wav",
    "blues/blues.00000.wav",
    "blues/._blues.00000.wav",
    "blues/notes.txt",
    "stray.wav",
  )  # beside the genre folders: no genre, not listed
  _touch(tmp_path / "Data", "images_original/jazz/jazz00000.png")
  return tmp_path / "Data"


def test_gtzan_labels_and_ids(tmp_path):
  root = _gtzan(tmp_path)
  items = list_items("gtzan", str(root))
  assert [it.clip_id for it in items] == [
    "blues/blues.00000.wav",
    "jazz/jazz.00000.wav",
    "jazz/jazz.00054.wav",
    "rock/rock.00001.wav",
  ]
  assert [it.labels for it in items] == [
    {"genre": "blues"},
    {"genre": "jazz"},
    {"genre": "jazz"},
    {"genre": "rock"},
  ]
  assert all(it.split is None and it.lyrics is None for it in items)
  assert items[0].path == str(root / "genres_original" / "blues" / "blues.00000.wav")
  assert os.path.isabs(items[0].path)


def test_gtzan_root_may_be_genres_original_itself(tmp_path):
  root = _gtzan(tmp_path)
  outer = list_items("gtzan", str(root))
  inner = list_items("gtzan", str(root / "genres_original"))
  assert outer == inner


def test_gtzan_marsyas_au_files(tmp_path):
  _touch(tmp_path / "genres", "pop/pop.00000.au", "pop/pop.00001.au")
  items = list_items("gtzan", str(tmp_path))
  assert [it.clip_id for it in items] == ["pop/pop.00000.au", "pop/pop.00001.au"]


# ----------------------------------------------------------------------------------------------
# maestro
# ----------------------------------------------------------------------------------------------

_MAESTRO_HEADER = (
  "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
)


def _maestro(tmp_path):
  rows = [
    'Frédéric Chopin,"Ballade No. 1, Op. 23",train,2018,2018/a.midi,2018/a.wav,10.5\n',
    "Johann Sebastian Bach,Prelude,validation,2017,2017/b.midi,2017/b.wav,3.2\n",
    "Franz Liszt,Etude,test,2009,2009/c.midi,2009/c.wav,7.0\n",
  ]
  _write(str(tmp_path / "maestro-v3.0.0.csv"), _MAESTRO_HEADER + "".join(rows))
  # An older csv beside it must not be used.
  _write(
    str(tmp_path / "maestro-v2.0.0.csv"), _MAESTRO_HEADER + "X,Y,train,2000,old.midi,old.wav,1.0\n"
  )
  _touch(tmp_path, "2018/a.wav", "2017/b.wav", "2009/c.wav", "2018/a.midi")
  return tmp_path


def test_maestro_splits_and_labels(tmp_path):
  items = list_items("maestro", str(_maestro(tmp_path)))
  by_id = {it.clip_id: it for it in items}
  assert sorted(by_id) == ["2009/c.wav", "2017/b.wav", "2018/a.wav"]
  assert by_id["2018/a.wav"].split == "train"
  assert by_id["2017/b.wav"].split == "validation"
  assert by_id["2009/c.wav"].split == "test"
  assert by_id["2018/a.wav"].labels == {"composer": "Frédéric Chopin", "year": "2018"}
  assert by_id["2017/b.wav"].path == str(tmp_path / "2017" / "b.wav")


def test_maestro_missing_file_kept_for_counting(tmp_path):
  root = _maestro(tmp_path)
  os.remove(root / "2009" / "c.wav")
  items = list_items("maestro", str(root))
  assert [it.clip_id for it in items] == ["2009/c.wav", "2017/b.wav", "2018/a.wav"]


def test_maestro_errors(tmp_path):
  with pytest.raises(DataError, match=r"has no 'maestro-v\*\.csv'"):
    list_items("maestro", str(tmp_path))
  _write(str(tmp_path / "maestro-v3.0.0.csv"), "canonical_composer,split,year\nA,train,2000\n")
  with pytest.raises(
    DataError,
    match=r"has no column 'audio_filename' \(columns: "
    r"canonical_composer, split, year\)",
  ):
    list_items("maestro", str(tmp_path))
  _write(str(tmp_path / "maestro-v3.0.0.csv"), _MAESTRO_HEADER)
  with pytest.raises(DataError, match=r"lists no audio files"):
    list_items("maestro", str(tmp_path))
  _write(str(tmp_path / "maestro-v3.0.0.csv"), _MAESTRO_HEADER + "A,B,train,2000,x.midi,x.wav,1\n")
  with pytest.raises(DataError, match=r"none of the 1 audio files listed in .* exist"):
    list_items("maestro", str(tmp_path))


# ----------------------------------------------------------------------------------------------
# speech_commands
# ----------------------------------------------------------------------------------------------


def _speech_commands(tmp_path, lists=True):
  _touch(
    tmp_path,
    "right/bb05582b_nohash_3.wav",
    "right/aa000000_nohash_0.wav",
    "five/b544d4fd_nohash_0.wav",
    "five/cc111111_nohash_1.wav",
    "_background_noise_/white_noise.wav",
    "_background_noise_/README.md",
  )
  _write(str(tmp_path / "LICENSE"), "cc-by")
  if lists:
    _write(str(tmp_path / "validation_list.txt"), "right/bb05582b_nohash_3.wav\n")
    _write(str(tmp_path / "testing_list.txt"), "five/b544d4fd_nohash_0.wav\r\n\n")
  return tmp_path


def test_speech_commands_words_and_splits(tmp_path):
  items = list_items("speech_commands", str(_speech_commands(tmp_path)))
  got = {it.clip_id: (it.labels["word"], it.split) for it in items}
  assert got == {
    "five/b544d4fd_nohash_0.wav": ("five", "test"),
    "five/cc111111_nohash_1.wav": ("five", "train"),
    "right/aa000000_nohash_0.wav": ("right", "train"),
    "right/bb05582b_nohash_3.wav": ("right", "validation"),
  }
  assert not any("_background_noise_" in it.path for it in items)


def test_speech_commands_without_lists_has_no_split(tmp_path):
  items = list_items("speech_commands", str(_speech_commands(tmp_path, lists=False)))
  assert len(items) == 4
  assert {it.split for it in items} == {None}


def test_speech_commands_only_noise_is_empty(tmp_path):
  _touch(tmp_path, "_background_noise_/white_noise.wav")
  with pytest.raises(DataError, match=r"no audio files .* for layout 'speech_commands'"):
    list_items("speech_commands", str(tmp_path))


# ----------------------------------------------------------------------------------------------
# folder
# ----------------------------------------------------------------------------------------------


def test_folder_labels_recursive(tmp_path):
  _touch(
    tmp_path,
    "cats/a.wav",
    "cats/deep/er/b.FLAC",
    "dogs/c.mp3",
    "loose.ogg",
    "dogs/readme.txt",
    ".hidden/d.wav",
  )
  items = list_items("folder", str(tmp_path))
  got = {it.clip_id: it.labels for it in items}
  assert got == {
    "cats/a.wav": {"label": "cats"},
    "cats/deep/er/b.FLAC": {"label": "cats"},
    "dogs/c.mp3": {"label": "dogs"},
    "loose.ogg": {},
  }
  assert [it.clip_id for it in items] == sorted(got)


def test_folder_extensions_argument(tmp_path):
  _touch(tmp_path, "a/x.wav", "a/y.flac")
  items = list_items("folder", str(tmp_path), extensions=(".flac",))
  assert [it.clip_id for it in items] == ["a/y.flac"]


def test_label_columns_for_builtin_layout(tmp_path):
  root = _maestro(tmp_path)
  items = list_items("maestro", str(root), label_columns=["year"])
  assert items[0].labels == {"year": "2009"}
  with pytest.raises(
    DataError,
    match=r"asks for 'genre', but layout 'maestro' has labels: "
    r"composer, year",
  ):
    list_items("maestro", str(root), label_columns=["genre"])


# ----------------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------------


def _manifest(tmp_path, text):
  _touch(tmp_path / "data", "audio/a.wav", "audio/b.wav", "audio/c.wav")
  _write(str(tmp_path / "data" / "lyrics" / "a.txt"), "la la la\nsecond line\n")
  path = tmp_path / "data" / "m.csv"
  _write(str(path), text)
  return path


def test_manifest_paths_labels_lyrics(tmp_path):
  outside = tmp_path / "elsewhere" / "z.wav"
  _touch(tmp_path / "elsewhere", "z.wav")
  path = _manifest(
    tmp_path,
    (
      "audio,language,genre,split,lyrics\n"
      'audio/b.wav,en,pop,val,"inline words, with a comma"\n'
      "./audio/a.wav,fr,rock,train,lyrics/a.txt\n"
      f"{outside},,jazz,,\n"
    ),
  )
  items = list_items("manifest", str(path))
  by_id = {it.clip_id: it for it in items}
  assert sorted(by_id) == sorted(["audio/a.wav", "audio/b.wav", str(outside)])
  a, b, z = by_id["audio/a.wav"], by_id["audio/b.wav"], by_id[str(outside)]
  assert a.path == str(tmp_path / "data" / "audio" / "a.wav")
  assert a.labels == {"language": "fr", "genre": "rock"}
  assert a.lyrics == "la la la\nsecond line"  # read from the text file
  assert a.split == "train"
  assert b.lyrics == "inline words, with a comma"
  assert b.split == "validation"
  assert z.labels == {"genre": "jazz"}  # empty cell -> label absent
  assert z.lyrics is None and z.split is None


def test_manifest_custom_columns_and_label_restriction(tmp_path):
  path = _manifest(tmp_path, "file,text,genre,mood\naudio/a.wav,hello,pop,happy\n")
  items = list_items(
    "manifest", str(path), audio_column="file", lyrics_column="text", label_columns=["mood"]
  )
  assert items == [
    Item(
      clip_id="audio/a.wav",
      path=str(tmp_path / "data" / "audio" / "a.wav"),
      labels={"mood": "happy"},
      split=None,
      lyrics="hello",
    )
  ]


def test_manifest_folder_with_manifest_csv(tmp_path):
  _touch(tmp_path, "x.wav")
  _write(str(tmp_path / "manifest.csv"), "audio,genre\nx.wav,pop\n")
  items = list_items("manifest", str(tmp_path))
  assert [(it.clip_id, it.labels) for it in items] == [("x.wav", {"genre": "pop"})]


def test_manifest_errors(tmp_path):
  path = _manifest(tmp_path, "a,b\nx,y\n")
  with pytest.raises(DataError) as e:
    list_items("manifest", str(path))
  assert str(e.value) == f"manifest {str(path)!r} has no column 'audio' (columns: a, b)"

  _write(str(path), "audio,genre\naudio/a.wav,pop\n")
  with pytest.raises(DataError, match=r"has no label column 'mood' \(columns: audio, genre\)"):
    list_items("manifest", str(path), label_columns=["mood"])

  _write(str(path), "audio,lyrics\naudio/a.wav,lyrics/missing.txt\n")
  with pytest.raises(DataError, match=r"line 2: lyrics file .*missing.txt' does not exist"):
    list_items("manifest", str(path))

  _write(str(path), "audio,split\naudio/a.wav,holdout\n")
  with pytest.raises(DataError, match=r"unknown split 'holdout'"):
    list_items("manifest", str(path))

  _write(str(path), "audio\naudio/a.wav\n./audio/a.wav\n")
  with pytest.raises(DataError, match=r"'audio/a.wav' more than once"):
    list_items("manifest", str(path))

  _write(str(path), "audio\n")
  with pytest.raises(DataError, match=r"no rows"):
    list_items("manifest", str(path))

  with pytest.raises(DataError, match=r"is a directory without 'manifest.csv'"):
    list_items("manifest", str(tmp_path))


# ----------------------------------------------------------------------------------------------
# errors shared by all layouts
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", readers.LAYOUTS)
def test_missing_root(tmp_path, layout):
  missing = str(tmp_path / "x" / "y")
  with pytest.raises(DataError) as e:
    list_items(layout, missing)
  assert str(e.value) == f"data.root {missing!r} does not exist"


@pytest.mark.parametrize("layout", ["gtzan", "maestro", "speech_commands", "folder"])
def test_root_is_a_file(tmp_path, layout):
  _touch(tmp_path, "a.wav")
  with pytest.raises(DataError, match=rf"is a file; layout '{layout}' expects a directory"):
    list_items(layout, str(tmp_path / "a.wav"))


@pytest.mark.parametrize("layout", ["gtzan", "speech_commands", "folder"])
def test_empty_dataset(tmp_path, layout):
  _touch(tmp_path, "a/readme.txt")
  with pytest.raises(
    DataError,
    match=r"no audio files \(wav, flac, .*\) found under "
    rf"data.root .* for layout '{layout}'",
  ):
    list_items(layout, str(tmp_path))


def test_unknown_layout():
  with pytest.raises(DataError) as e:
    list_items("foo", "/x")
  assert str(e.value) == (
    "unknown data.layout 'foo'; expected one of gtzan, maestro, speech_commands, folder, manifest"
  )
  assert isinstance(e.value, ValueError)


def test_symlink_loop_does_not_hang(tmp_path):
  _touch(tmp_path, "a/x.wav")
  os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
  items = list_items("folder", str(tmp_path))
  assert [it.clip_id for it in items] == ["a/x.wav"]
