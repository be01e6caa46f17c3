"""A Speech Commands-style corpus spoken by espeak-ng: one-second 16-kHz clips of command words,
one folder per word, many synthetic speakers (voice variant, pitch, speed, level), and the
dataset's validation and testing lists, so `--config.data.layout=speech_commands` reads it as
it reads Google's.

    python tools/render_speech.py --out /data/speech --speakers 20
    python -m jaxvae.main --config=configs/wave_vae.py:small --workdir=runs/wave_speech \\
        --config.data.layout=speech_commands --config.data.root=/data/speech \\
        --config.data.sr=16000 --config.data.example_mode=pad_crop

Per clip (seeded by `--seed`, word and speaker): the speaker's espeak-ng voice variant
(English, one of `VARIANTS`), pitch 20-80, speed 130-200 words per minute, a level of -20 to
-3 dBFS peak, a random onset inside the second, and background noise at -60 to -40 dBFS.
Speakers 0..n-1 are split as the real dataset splits (by speaker): the last 10 % in
`validation_list.txt`, the 10 % before them in `testing_list.txt`. Needs `espeak-ng`
(`apt-get install espeak-ng`); a missing program is one `error:` line and exit status 1.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from jaxvae import workdir as workdir_lib  # noqa: E402
from jaxvae.audio import decode as audio_decode  # noqa: E402

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VARIANTS = ("", "+m1", "+m3", "+m5", "+f1", "+f3", "+f5", "+klatt", "+croak", "+whisper")
SR = 16000


def speak(word: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
  """One clip [SR] of `word` and its choices."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  plan = {
    "voice": "en" + VARIANTS[int(rng.integers(len(VARIANTS)))],
    "pitch": int(rng.integers(20, 81)),
    "speed": int(rng.integers(130, 201)),
    "peak_db": float(rng.uniform(-20.0, -3.0)),
    "noise_db": float(rng.uniform(-60.0, -40.0)),
  }
  cmd = ["espeak-ng", "-v", plan["voice"], "-p", str(plan["pitch"]), "-s", str(plan["speed"])]
  done = subprocess.run(cmd + ["--stdout", word], capture_output=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"espeak-ng failed: {done.stderr.decode()[-300:]}")
  y, sr_in = sf.read(io.BytesIO(done.stdout), dtype="float32")
  y = audio_decode.resample(y, sr_in, SR)
  nz = np.flatnonzero(np.abs(y) > 1e-3)
  y = y[nz[0] : nz[-1] + 1][:SR] if len(nz) else y[:SR]
  start = int(rng.integers(0, SR - len(y) + 1))
  clip = np.zeros(SR, np.float32)
  clip[start : start + len(y)] = y
  clip *= 10 ** (plan["peak_db"] / 20) / (np.max(np.abs(clip)) + 1e-9)
  clip += 10 ** (plan["noise_db"] / 20) * rng.standard_normal(SR).astype(np.float32)
  return clip, plan


def render(out: str, speakers: int, seed: int) -> int:
  """Writes the corpus into `out` (new or empty); returns the number of clips."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  out = os.path.normpath(os.path.abspath(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f"{out!r} already exists and is not an empty folder")
  if os.path.isdir(out):
    os.rmdir(out)
  workdir_lib.remove_stale_tmp(out)
  tmp = workdir_lib.tmp_name(out)
  names = {"validation": [], "testing": []}
  n_val = max(1, speakers // 10)
  for w, word in enumerate(WORDS):
    os.makedirs(os.path.join(tmp, word), exist_ok=True)
    for s in range(speakers):
      clip, _ = speak(word, np.random.default_rng([seed, w, s]))
      name = f"{word}/spk{s:03d}_nohash_0.wav"
      sf.write(os.path.join(tmp, name), clip, SR, subtype="PCM_16")
      if s >= speakers - n_val:
        names["validation"].append(name)
      elif s >= speakers - 2 * n_val:
        names["testing"].append(name)
  for split, rows in names.items():
    with open(os.path.join(tmp, f"{split}_list.txt"), "w") as f:
      f.write("\n".join(rows) + "\n")
  workdir_lib.rename_into_place(tmp, out, "validation_list.txt")
  return len(WORDS) * speakers


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python tools/render_speech.py", description=__doc__)
  p.add_argument("--out", required=True)
  p.add_argument("--speakers", type=int, default=20, help="speakers per word")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if shutil.which("espeak-ng") is None:
    print(
      "error: espeak-ng not found on PATH; install it with 'apt-get install espeak-ng'",
      file=sys.stderr,
    )
    return 1
  if args.speakers < 3:
    print(f"error: --speakers is {args.speakers}; expected at least 3", file=sys.stderr)
    return 1
  try:
    clips = render(args.out, args.speakers, args.seed)
  except (OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {clips} clips to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
