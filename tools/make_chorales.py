"""Write music21's bundled Bach chorales as MIDI files (offline: the corpus ships with music21).

    python tools/make_chorales.py --out /tmp/chorales [--limit 20]

Needs `pip install music21`. Files are named after the corpus entry (`bwv269.mid`, ...), in
Riemenschneider order (350 distinct scores). A chorale whose repeats music21 cannot expand is
written once through and listed under "repeats_dropped"; one that fails to parse or write is
reported under "failed" and the run goes on. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def chorale_names(limit: int | None = None) -> list[str]:
  """Corpus names ('bach/bwv269', ...) of the Riemenschneider chorales, each once.

  The Riemenschneider numbering lists some chorales twice (371 numbers, 350 scores).
  """
  from music21.corpus import chorales  # pylint: disable=import-outside-toplevel

  names = list(dict.fromkeys(chorales.Iterator(returnType="filename")))
  return names if limit is None else names[:limit]


def _strip_repeats(score) -> int:
  """Remove repeat barlines and expressions (the score is then played once through)."""
  from music21 import bar  # pylint: disable=import-outside-toplevel
  from music21 import repeat  # pylint: disable=import-outside-toplevel

  marks = list(score.recurse().getElementsByClass((bar.Repeat, repeat.RepeatExpression)))
  for mark in marks:
    mark.activeSite.remove(mark)
  return len(marks)


def write_chorale(name: str, out_dir: str) -> tuple[str, bool]:
  """Parse one corpus chorale and write `<out_dir>/<basename>.mid`.

  Returns the path and whether repeats had to be dropped: a few scores have repeat
  marks music21 cannot expand, and such a chorale is better written once through
  than not at all.
  """
  from music21 import corpus  # pylint: disable=import-outside-toplevel
  from music21 import repeat  # pylint: disable=import-outside-toplevel

  path = os.path.join(out_dir, name.split("/")[-1] + ".mid")
  score = corpus.parse(name)
  try:
    score.write("midi", fp=path)
    return path, False
  except repeat.ExpanderException:
    _strip_repeats(score)
    score.write("midi", fp=path)
    return path, True


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for the .mid files")
  parser.add_argument("--limit", type=int, default=None, help="only the first N chorales")
  args = parser.parse_args(argv)
  try:
    names = chorale_names(args.limit)
  except ImportError:
    parser.error("music21 is not installed: pip install music21")
  os.makedirs(args.out, exist_ok=True)
  written, failed, repeats_dropped = 0, {}, []
  for name in names:
    try:
      _, dropped = write_chorale(name, args.out)
      written += 1
      if dropped:
        repeats_dropped.append(name)
    # music21 raises many exception types on odd scores; one bad chorale must not
    # stop the run, and it is reported below.
    except Exception as e:  # noqa: BLE001
      failed[name] = f"{type(e).__name__}: {e}"
      logging.warning("skipped %s: %s", name, failed[name])
  summary = {
    "out": args.out,
    "written": written,
    "failed": failed,
    "repeats_dropped": repeats_dropped,
  }
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  sys.exit(0 if not main()["failed"] else 1)
