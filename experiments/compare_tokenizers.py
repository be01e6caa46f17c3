"""Which tokenization should a MIDI VAE train on? Each one trained for the same wall time on the
same music, then measured.

  python experiments/compare_tokenizers.py --out runs/tokenizers --minutes 3

Corpora: `chorales` (music21's Bach chorales, the family's built-in corpus: four voices, strict
meter; 200 by default) and `piano`, a MAESTRO-like piano set made here from music21's string
quartets (the first 24 movements it can write, Mozart's, Haydn's, then Beethoven's): every
part played by one piano with performance timing (a slow rubato and
onset jitter of ~15 ms), phrase-shaped velocities over 30-110 and a sustain pedal per bar, so
that times fall off the beat grid as in recorded performances.

Tokenizations: `events` (the seed's 774 ids), MidiTok's `remi`, `tsd`, `midi_like` and
`remi_bpe` (REMI with a 1,000-id BPE vocabulary learned on the training split). Each trains the
`music_transformer_vaegan.py:small` stage-2 VAE (windows of 256 tokens) for `--minutes` of wall
time (`train.max_runtime`, after `--mode=preprocess` built the store and learned the vocabulary
outside the clock), then `--mode=eval` measures it. Per corpus and tokenization the
table has: the vocabulary, tokens per note and per bar, the round-trip note F1 of the validation
files (decoded vs the original file, onsets and onsets+offsets, mir_eval; once as decoded, with
the tokenization's tempo bins, and once at the file's own tempo map, which leaves only its time
grid), the evaluated checkpoint's step, training epochs, tokens/s and notes/s, validation NLL
per token and per note (comparable across vocabularies),
the note F1 of the VAE's reconstructions, and the generated pieces' statistics against the
validation windows (pitch-class JS, overlap areas of density, polyphony, duration), with the
ids that did not decode. Writes `OUT/table.{md,json}` and `OUT/table.png`. Re-running resumes:
a finished run is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pretty_midi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
from jaxvae.data import listing  # noqa: E402
from jaxvae.data import readers  # noqa: E402
from jaxvae.data import tokens as tokens_data  # noqa: E402
from jaxvae.errors import MidiError  # noqa: E402
from jaxvae.evaluators import notes  # noqa: E402
from jaxvae.symbolic import tokenizers  # noqa: E402
from jaxvae.training import writer  # noqa: E402

CONFIG = "configs/music_transformer_vaegan.py:small"
TOKENIZERS = {
  "events": {"data.midi.tokenizer": "events"},
  "remi": {"data.midi.tokenizer": "remi"},
  "tsd": {"data.midi.tokenizer": "tsd"},
  "midi_like": {"data.midi.tokenizer": "midi_like"},
  "remi_bpe": {"data.midi.tokenizer": "remi", "data.midi.vocab_size": "1000"},
}
QUARTETS = ("mozart", "haydn", "beethoven")
COMMON = {
  "stage": "2",
  "data.layout": "folder",
  "data.midi.seq_len": "256",
  "data.midi.overlap": "64",
  "data.val_fraction": "0.1",
  "train.epochs": "1000",
  "train.patience": "0",
  "kl.steps": "300",
  "eval.num_generated": "16",
  "eval.num_reconstructed": "32",
  "generate.num_tokens": "255",
}


def chorales(out: str, limit: int) -> str:
  from jaxvae.data import tokens

  return tokens.ensure_chorales(os.path.join(out, "cache"), limit)


def piano(out: str, pieces: int, seed: int = 0) -> str:
  """The MAESTRO-like piano set (see the module doc): the first `pieces` quartet movements
  music21 can write, Mozart's, then Haydn's, then Beethoven's; written once."""
  from music21 import corpus
  import pretty_midi

  folder = os.path.join(out, "corpora", "piano")
  if os.path.exists(os.path.join(folder, "done.json")):
    return folder
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)  # drawn piece after piece: a resumed build differs
  written = 0
  paths = [p for c in QUARTETS for p in corpus.getComposer(c) if not str(p).endswith(".krn")]
  for path in paths:
    if written >= pieces:
      break
    name = os.path.splitext(str(path).split("corpus/")[-1].replace("/", "_"))[0]
    target = os.path.join(folder, f"{name}.mid")
    if os.path.exists(target):
      written += 1
      continue
    tmp = os.path.join(folder, f"{name}.tmp")
    try:
      corpus.parse(path).write("midi", fp=tmp)
      score = pretty_midi.PrettyMIDI(tmp)
    except Exception as e:  # noqa: BLE001  a score music21 cannot write is left out
      print(f"piano: {name} left out ({type(e).__name__})")
      continue
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    _perform(score, rng).write(target)
    written += 1
  with open(os.path.join(folder, "done.json"), "w") as f:
    json.dump({"pieces": written}, f)
  return folder


def _perform(score, rng):
  """Every part on one piano, played: rubato, onset jitter, phrase dynamics, pedal per bar."""
  import pretty_midi

  notes_ = [n for inst in score.instruments if not inst.is_drum for n in inst.notes]
  end = max((n.end for n in notes_), default=0.0)
  phase = rng.uniform(0, 2 * np.pi)

  def warp(t):  # a slow rubato: +-6 % of the tempo over ~20 s
    return t + 0.06 * 20 / (2 * np.pi) * (np.sin(2 * np.pi * t / 20 + phase) - np.sin(phase))

  out = pretty_midi.PrettyMIDI(initial_tempo=score.estimate_tempo() if notes_ else 120.0)
  piano_ = pretty_midi.Instrument(program=0, name="Piano")
  for n in notes_:
    start = max(0.0, warp(n.start) + rng.normal(0, 0.015))
    stop = max(start + 0.03, warp(n.end) + rng.normal(0, 0.015))
    arc = 0.5 - 0.5 * np.cos(2 * np.pi * n.start / 16.0)  # 16-s phrases
    velocity = int(np.clip(35 + 60 * arc + rng.normal(0, 8), 30, 110))
    piano_.notes.append(pretty_midi.Note(velocity, n.pitch, start, stop))
  bar = 60.0 / 120.0 * 4
  for t in np.arange(0.0, warp(end), bar):
    piano_.control_changes.append(pretty_midi.ControlChange(64, 100, t + 0.05))
    piano_.control_changes.append(pretty_midi.ControlChange(64, 0, t + bar - 0.05))
  out.instruments.append(piano_)
  return out


def _run(args: list[str], ok=(0,)) -> None:
  code = subprocess.run([sys.executable, "-m", "jaxvae.main", *args], cwd=ROOT).returncode
  if code not in ok:
    raise SystemExit(f"jaxvae.main {' '.join(args[:3])} ... exited with {code}")


def train_and_eval(workdir: str, overrides: dict, minutes: float) -> None:
  """Trains for `minutes` of wall time (a run stopped by train.max_runtime exits 75 with its
  state saved; the marker keeps a re-run from training it again), then evaluates it."""
  sets = [f"--config.{k}={v}" for k, v in overrides.items()]
  base = [f"--config={CONFIG}", f"--workdir={workdir}", "--no_progress", *sets]
  marker = os.path.join(workdir, "compare_trained.json")
  if not os.path.exists(marker):
    _run([*base, "--mode=preprocess"])  # the store (and a learned vocabulary) outside the clock
    _run([*base, f"--config.train.max_runtime={int(minutes * 60)}"], ok=(0, 75))
    with open(marker, "w", encoding="utf-8") as f:
      json.dump({"minutes": minutes}, f)
  if not os.path.exists(os.path.join(workdir, "eval", "metrics.json")):
    _run([*base, "--mode=eval"])


def tokenizer_measures(workdir: str, root: str) -> dict:
  """Tokens per note and per bar, and the round-trip note F1 of the validation files, by the
  run's tokenizer (its learned vocabulary included)."""
  tok = writer.run_tokenizer(workdir)
  with open(os.path.join(workdir, "jaxvae_run.json"), encoding="utf-8") as f:
    data = json.load(f)
  split = data["config"]["data"]
  items = readers.list_items("folder", root, extensions=tokens_data.MIDI_EXTENSIONS)
  val = [
    it
    for it in items
    if listing.split_of(it, split["val_fraction"], split["split_seed"]) == "validation"
  ]
  ids = notes_n = bars = 0
  f1, f1_off, f1_beats, f1_beats_off = [], [], [], []
  for it in val:
    try:
      encoded = tok.encode(it.path)
    except MidiError:
      continue
    ids += len(encoded.ids)
    notes_n += encoded.notes
    bars += max(1, len(encoded.bars))
    ref = notes.piece_notes(pretty_midi.PrettyMIDI(it.path))
    if not len(ref[1]):
      continue
    scores = notes.interval_scores(*ref, *notes.piece_notes(tok.decode(encoded.ids)))
    f1.append(scores["f1"])
    f1_off.append(scores["f1_offset"])
    scores = notes.interval_scores(*ref, *notes.piece_notes(_at_file_tempo(tok, encoded, it.path)))
    f1_beats.append(scores["f1"])
    f1_beats_off.append(scores["f1_offset"])
  return {
    "vocab": tok.vocab_size,
    "tokens_per_note": ids / max(notes_n, 1),
    "tokens_per_bar": ids / max(bars, 1),
    "roundtrip_f1": float(np.mean(f1)) if f1 else None,
    "roundtrip_f1_offset": float(np.mean(f1_off)) if f1_off else None,
    "roundtrip_f1_file_tempo": float(np.mean(f1_beats)) if f1_beats else None,
    "roundtrip_f1_offset_file_tempo": float(np.mean(f1_beats_off)) if f1_beats_off else None,
    "validation_files": len(val),
  }


def _at_file_tempo(tok, encoded, path):
  """The decoded piece played at the file's own tempo map: what the tokenization keeps of the
  notes' places in beats, without its tempo bins (MidiTok's beat-based tokenizations store the
  tempo in bins, and a bin a few percent off moves every later note in seconds)."""
  if tok.kind == "events":  # absolute time: its tempo tokens never move a note
    return tok.decode(encoded.ids)
  import symusic

  score, _ = tok.decode_score(encoded.ids)
  if score is None:
    return pretty_midi.PrettyMIDI()
  original = symusic.Score(path)
  factor = score.ticks_per_quarter / original.ticks_per_quarter
  score.tempos = [symusic.Tempo(int(round(t.time * factor)), qpm=t.qpm) for t in original.tempos]
  return tokenizers._to_pretty_midi(score)  # pylint: disable=protected-access


def run_measures(workdir: str) -> dict:
  """Training steps and throughput (metrics.jsonl: epochs after the first, which compiles) and
  the eval's measures."""
  with open(os.path.join(workdir, "jaxvae_run.json"), encoding="utf-8") as f:
    seq_len = json.load(f)["config"]["data"]["midi"]["seq_len"]
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  rate = [r["samples_per_s"] for r in epochs[1:] if r.get("samples_per_s")]
  with open(os.path.join(workdir, "eval", "metrics.json"), encoding="utf-8") as f:
    m = json.load(f)
  val, dist, rec = m["val"], m["distance"], m.get("reconstruction", {})
  tokens_per_s = float(np.median(rate)) * seq_len if rate else None
  per_note = val.get("tokens_per_note")
  return {
    "steps": m["step"],
    "epochs": len(epochs),
    "tokens_per_s": tokens_per_s,
    "notes_per_s": tokens_per_s / per_note if tokens_per_s and per_note else None,
    "nll_per_token": val["nll"],
    "nll_per_note": val.get("nll_per_note"),
    "recon_f1": rec.get("f1"),
    "recon_f1_offset": rec.get("f1_offset"),
    "gen_pitch_class_js": dist.get("pitch_class_js"),
    "gen_overlap_density": dist.get("overlap_area", {}).get("note_density"),
    "gen_overlap_polyphony": dist.get("overlap_area", {}).get("polyphony"),
    "gen_overlap_duration": dist.get("overlap_area", {}).get("mean_duration"),
    "gen_empty": m["generated"]["empty"],
    "undecodable_tokens": m["generation"].get("undecodable_tokens"),
  }


COLUMNS = (
  ("vocab", "vocab", "{:.0f}"),
  ("tokens_per_note", "tok/note", "{:.2f}"),
  ("tokens_per_bar", "tok/bar", "{:.1f}"),
  ("roundtrip_f1", "RT F1", "{:.3f}"),
  ("roundtrip_f1_offset", "RT F1 off", "{:.3f}"),
  ("roundtrip_f1_file_tempo", "RT F1 @file tempo", "{:.3f}"),
  ("roundtrip_f1_offset_file_tempo", "RT F1 off @file tempo", "{:.3f}"),
  ("steps", "steps", "{:.0f}"),
  ("epochs", "epochs", "{:.0f}"),
  ("tokens_per_s", "tok/s", "{:.0f}"),
  ("notes_per_s", "notes/s", "{:.0f}"),
  ("nll_per_token", "NLL/tok", "{:.3f}"),
  ("nll_per_note", "NLL/note", "{:.3f}"),
  ("recon_f1", "recon F1", "{:.3f}"),
  ("gen_pitch_class_js", "gen PC JS", "{:.3f}"),
  ("gen_overlap_density", "gen OA dens", "{:.2f}"),
  ("gen_overlap_polyphony", "gen OA poly", "{:.2f}"),
  ("gen_overlap_duration", "gen OA dur", "{:.2f}"),
  ("undecodable_tokens", "undecodable", "{:.0f}"),
)


def table(rows: dict) -> str:
  lines = []
  for corpus, by_tok in rows.items():
    lines += [f"### {corpus}", ""]
    lines.append("| tokenization | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for name, r in by_tok.items():
      cells = ["n/a" if r.get(k) is None else fmt.format(r[k]) for k, _, fmt in COLUMNS]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def plot(rows: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = (("nll_per_note", "val NLL per note (nats)"), ("tokens_per_note", "tokens per note"))
  keys += (("notes_per_s", "training notes / s"), ("recon_f1", "reconstruction note F1"))
  fig, axes = plt.subplots(
    len(rows), len(keys), figsize=(4 * len(keys), 3 * len(rows)), squeeze=False
  )
  for i, (corpus, by_tok) in enumerate(rows.items()):
    names = list(by_tok)
    for j, (key, title) in enumerate(keys):
      values = [by_tok[n].get(key) or 0.0 for n in names]
      axes[i, j].bar(names, values, color="tab:blue")
      axes[i, j].set_title(f"{corpus}: {title}", fontsize=9)
      axes[i, j].tick_params(axis="x", labelrotation=45, labelsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--minutes", type=float, default=3.0, help="training wall time per run")
  parser.add_argument("--corpora", default="chorales,piano")
  parser.add_argument("--tokenizers", default=",".join(TOKENIZERS))
  parser.add_argument("--chorales", type=int, default=200)
  parser.add_argument("--piano-pieces", type=int, default=24)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  rows = {}
  for corpus in args.corpora.split(","):
    if corpus == "chorales":
      root = chorales(args.out, args.chorales)
    else:
      root = piano(args.out, args.piano_pieces)
    rows[corpus] = {}
    for name in args.tokenizers.split(","):
      workdir = os.path.join(args.out, "runs", f"{corpus}_{name}")
      overrides = (
        COMMON
        | TOKENIZERS[name]
        | {"data.root": root, "data.cache_dir": os.path.join(args.out, "cache")}
        # 24 pieces: a tenth can draw none (validation would fall back to the training split).
        | {"data.val_fraction": "0.1" if corpus == "chorales" else "0.25"}
      )
      train_and_eval(workdir, overrides, args.minutes)
      rows[corpus][name] = tokenizer_measures(workdir, root) | run_measures(workdir)
      with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
      print(table({corpus: rows[corpus]}), flush=True)
  text = table(rows)
  with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  plot(rows, os.path.join(args.out, "table.png"))
  print(text)


if __name__ == "__main__":
  main()
