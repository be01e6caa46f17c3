"""`--mode=validate`: scan every audio file of the dataset (decodable, finite, long enough,
not silent), print a table of the problems and label counts (and, with `data.sources`, a line
per source), write `DIR/validate.json`."""

from __future__ import annotations

import os

from jaxvae import workdir as workdir_lib
from jaxvae.audio import decode as audio_lib
from jaxvae.data import listing
from jaxvae.data import sources as sources_lib


def run(config, workdir: str, args) -> int:
  """Scans the dataset; non-zero exit only when no usable file remains."""
  items = listing.list_dataset(config)
  report = audio_lib.validate_items(
    items, sr=config.data.sr, min_seconds=config.data.min_seconds, progress=args.progress
  )
  print(audio_lib.format_validation_table(report))
  if sources_lib.is_combined(config):
    report["sources"] = _by_source(config, items, report)
    for name, r in report["sources"].items():
      print(
        f"source {name} ({r['layout']}, {r['root'] or 'built-in'}): {r['ok']} ok of "
        f"{r['files']} files; bad: {r['bad_reasons'] or 'none'}"
      )
  workdir_lib.write_json(os.path.join(workdir, "validate.json"), report, indent=2)
  if report["ok"] == 0:
    print(f"error: no usable audio file among {len(items)}")
    return 1
  return 0


def _by_source(config, items, report) -> dict[str, dict]:
  """Per source: files, usable files and the bad files' reasons (from the one scan)."""
  source_of = {it.path: it.source for it in items}
  out = {}
  for s in sources_lib.of_config(config):
    reasons: dict[str, int] = {}
    for b in report["bad"]:
      if source_of.get(b["path"]) == s.name:
        reasons[b["reason"]] = reasons.get(b["reason"], 0) + 1
    files = sum(1 for it in items if it.source == s.name)
    out[s.name] = {
      "layout": s.layout,
      "root": s.root,
      "files": files,
      "ok": files - sum(reasons.values()),
      "bad_reasons": ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())),
    }
  return out
