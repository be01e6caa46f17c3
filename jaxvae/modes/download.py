"""`--mode=download`: fetch, verify and extract the config's public dataset(s) into their
roots (jaxvae/data/download.py); with `data.sources`, every source whose layout has an
official archive (the others are folders the user already has)."""

from __future__ import annotations

import os

from jaxvae import workdir as workdir_lib
from jaxvae.data import download
from jaxvae.data import sources as sources_lib
from jaxvae.errors import DataError


def run(config, workdir: str, args) -> int:
  d = config.data
  todo = [s for s in sources_lib.of_config(config) if s.layout in download.DOWNLOADABLE]
  if not todo:
    layouts = ", ".join(sorted({s.layout for s in sources_lib.of_config(config)}))
    key = "data.sources" if sources_lib.is_combined(config) else "data.layout"
    raise DataError(
      f"config key '{key}' has layout(s) '{layouts}'; --mode=download fetches "
      f"{', '.join(download.DOWNLOADABLE)} (set data.layout and data.root, or data.sources)"
    )
  mirror = dict(url=d.download.url, sha256=d.download.sha256, size=d.download.size)
  if len(todo) > 1 and any(mirror.values()):
    raise DataError(
      "config keys 'data.download.url/sha256/size' name one archive, but data.sources has "
      f"{len(todo)} downloadable sources; download them one config at a time"
    )
  results = []
  for source in todo:
    if not source.root:
      raise DataError(
        f"config key 'data.root' is empty; --mode=download needs the folder to fill "
        f"(--config.data.root=PATH) for data.layout '{source.layout}'"
      )
    archive = download.archive_for(source.layout, d.kind, d.download.archive)
    archive = download.with_overrides(archive, **mirror)
    outcome = download.fetch(
      source.layout,
      archive,
      source.root,
      retries=d.download.retries,
      timeout=d.download.timeout,
      keep_archive=d.download.keep_archive,
      progress=not args.no_progress,
    )
    r = outcome.record
    if outcome.action == "present":
      print(f"{source.name}: already in {outcome.root}, verified {r.get('verified_at')}")
    else:
      differing = r["differing_files"]
      print(
        f"{source.name}: {archive.filename} verified (sha256 {r['sha256'][:12]}..., "
        f"{r['size']} bytes), {r['extracted_files']} files extracted into {outcome.root}"
        + (f"; {differing} files already there differ and were left as they were" * bool(differing))
      )
    results.append({"source": source.name, "action": outcome.action, **r})
  workdir_lib.write_json(os.path.join(workdir, "download.json"), results, indent=2)
  return 0
