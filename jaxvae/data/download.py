"""`--mode=download`: a public dataset's official archive -> `data.root`, in the layout the
reader expects, checked before anything is extracted.

What a user of torchaudio's or TFDS's downloaders expects, and what this module promises:

- The archive is fetched to `<root>/<archive>.part` with a progress bar (bytes, rate, ETA).
  An interrupted transfer (a dropped connection, a kill, a reboot) resumes where it stopped
  with an HTTP range request, within the run (`data.download.retries`) or on the next run.
- Size and SHA-256 are checked against the table below before anything is extracted. A
  downloaded archive that fails is kept as `<archive>.rejected` (nothing is deleted) and
  the error names the file, what was expected and what was found.
- An archive the user placed in `root` by hand (offline machines, slow links, a mirror) is
  verified and extracted the same way, and never deleted or renamed.
- Extraction writes each file under a temporary name and renames it into place, refuses
  paths that leave `root` and links, and never overwrites a file that differs from the
  archive's (it is counted and reported instead).
- `<root>/jaxvae_download.json` records what was fetched, from where, its checksum and when;
  once it exists and the reader finds the data, a re-run fetches nothing.
- Offline or blocked: one line naming the URL, the folder and how to place the archive there.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile

import tqdm

from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.data import readers
from jaxvae.errors import DataError
from jaxvae.errors import DownloadError

RECORD = "jaxvae_download.json"
CHUNK = 256 * 1024  # bytes per read; one progress update and one fault point each
_USER_AGENT = "jaxvae-download/1"


@dataclasses.dataclass(frozen=True)
class Archive:
  """One official archive of a dataset.

  Attributes:
    filename: the archive's name in `root` (also the name to give a hand-placed copy).
    url: where the publisher serves it.
    sha256: the published SHA-256 of the whole archive.
    size: the published size in bytes, or None where only a rounded size is published (then
      the server's Content-Length is checked, and the SHA-256 alone proves the content).
    approx: the size as a person reads it, for messages.
    strip: leading folders dropped from each member's path, so that `root` gets the layout
      `jaxvae.data.readers` expects.
  """

  filename: str
  url: str
  sha256: str
  size: int | None
  approx: str
  strip: int = 0


# The official archives. Sources:
# - gtzan: size and SHA-256 from TensorFlow Datasets' checksum file for its `gtzan` builder
#   (tensorflow_datasets/audio/gtzan/checksums.tsv); the archive holds genres/<genre>/*.au.
# - speech_commands: v0.02, size and SHA-256 from TensorFlow Datasets' checksum file
#   (tensorflow_datasets/url_checksums/speech_commands.txt); word folders at the top level.
# - maestro: v3.0.0, SHA-256 from Magenta's dataset page
#   (https://magenta.tensorflow.org/datasets/maestro), which publishes sizes rounded only
#   ("101GB", "56MB"); both zips hold one top folder maestro-v3.0.0/ with the csv in it.
ARCHIVES: dict[tuple[str, str], Archive] = {
  ("gtzan", "audio"): Archive(
    filename="genres.tar.gz",
    url="http://opihi.cs.uvic.ca/sound/genres.tar.gz",
    sha256="24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6",
    size=1225571541,
    approx="1.2 GB",
  ),
  ("speech_commands", "audio"): Archive(
    filename="speech_commands_v0.02.tar.gz",
    url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
    sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    size=2428923189,
    approx="2.4 GB",
  ),
  ("maestro", "full"): Archive(
    filename="maestro-v3.0.0.zip",
    url="https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0.zip",
    sha256="6680fea5be2339ea15091a249fbd70e49551246ddbd5ca50f1b2352c08c95291",
    size=None,
    approx="101 GB (120 GB extracted)",
    strip=1,
  ),
  ("maestro", "midi"): Archive(
    filename="maestro-v3.0.0-midi.zip",
    url=(
      "https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip"
    ),
    sha256="70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c",
    size=None,
    approx="56 MB (81 MB extracted)",
    strip=1,
  ),
}
DOWNLOADABLE = ("gtzan", "speech_commands", "maestro")
VARIANTS = ("", "full", "midi")  # data.download.archive: which MAESTRO archive ('' by data.kind)


def archive_for(layout: str, kind: str, variant: str = "") -> Archive:
  """The table's archive for a layout; MAESTRO's is the MIDI-only zip for `data.kind=midi`
  and the full audio+MIDI zip otherwise, unless `variant` names one."""
  if layout not in DOWNLOADABLE:
    raise DataError(
      f"config key 'data.layout' is '{layout}'; --mode=download fetches "
      f"{', '.join(DOWNLOADABLE)} (other layouts are folders you already have)"
    )
  if layout == "maestro":
    return ARCHIVES[("maestro", variant or ("midi" if kind == "midi" else "full"))]
  return ARCHIVES[(layout, "audio")]


def with_overrides(archive: Archive, url: str = "", sha256: str = "", size: int = 0) -> Archive:
  """The archive from a mirror (`data.download.url`). Without `sha256` the mirror must serve
  the very same file as the table's (it is checked against the table)."""
  if not (url or sha256 or size):
    return archive
  return dataclasses.replace(
    archive,
    url=url or archive.url,
    sha256=(sha256 or archive.sha256).lower(),
    size=size or (None if sha256 else archive.size),
  )


@dataclasses.dataclass
class Outcome:
  """What `fetch` did: 'present' (a verified copy was already there), 'downloaded' or
  'local' (a hand-placed archive was verified), and the extraction counts."""

  action: str
  root: str
  record: dict


def fetch(
  layout: str,
  archive: Archive,
  root: str,
  *,
  retries: int = 3,
  timeout: float = 30.0,
  keep_archive: bool = False,
  progress: bool = True,
) -> Outcome:
  """Makes `root` hold `layout`'s dataset from `archive`, verified; see the module doc."""
  root = os.path.abspath(root)
  record_path = os.path.join(root, RECORD)
  record = _read_record(record_path)
  path = os.path.join(root, archive.filename)
  ours = path + ".jaxvae-downloaded"  # marks an archive this module fetched (not the user's)
  if record and record.get("sha256") == archive.sha256 and _readable(layout, root):
    if record.get("archive_kept") is False and os.path.exists(ours):
      _remove_ours(path, ours)  # a run killed after its record, before this clean-up
    return Outcome("present", root, record)
  try:
    os.makedirs(root, exist_ok=True)
  except OSError as e:
    raise DownloadError(f"cannot create data.root '{root}': {e.strerror}") from None
  if os.path.isfile(path):
    action = "downloaded" if os.path.exists(ours) else "local"
    logging.info("Verifying %s in %s", archive.filename, root)
    size, digest = _hash_file(path, progress)
    _check(archive, path, size, digest, rejected=None)
  else:
    action = "downloaded"
    size, digest = _download(archive, root, retries, timeout, progress)
    part = path + ".part"
    _check(archive, part, size, digest, rejected=path + ".rejected")
    with open(ours, "w", encoding="utf-8") as f:  # before the rename: never mistaken as theirs
      f.write(archive.url)
    os.replace(part, path)
  counts = extract(path, root, strip=archive.strip, progress=progress)
  if not _readable(layout, root):
    raise DownloadError(
      f"archive '{path}' was extracted to '{root}' but data.layout '{layout}' finds no data "
      "there; the archive is not the one this layout reads"
    )
  record = {
    "layout": layout,
    "archive": archive.filename,
    "url": archive.url if action == "downloaded" else None,
    "source": action,
    "size": size,
    "sha256": digest,
    "verified_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    **counts,
  }
  # The record first: a kill after it leaves a verified dataset (and the clean-up below for
  # the next run), never an extracted dataset without its archive or record.
  record["archive_kept"] = not (action == "downloaded" and not keep_archive)
  workdir_lib.write_json(record_path, record, indent=2)
  faults.point("download.record", record_path)
  if not record["archive_kept"]:
    _remove_ours(path, ours)  # ours, not the user's: fetched by jaxvae and fully extracted
  elif os.path.exists(ours):
    os.remove(ours)
  return Outcome(action, root, record)


def _remove_ours(path: str, marker: str) -> None:
  """Removes an archive jaxvae downloaded (and its marker, last)."""
  if os.path.exists(path):
    os.remove(path)
  os.remove(marker)


def unreachable_message(archive: Archive, root: str, reason: str) -> str:
  """The one line for an offline or blocked machine."""
  return (
    f"cannot download {archive.url} ({reason}); place {archive.filename} ({archive.approx}) "
    f"in {root} by hand and run --mode=download again to verify and extract it"
  )


# ----------------------------------------------------------------------------------------------
# Transfer
# ----------------------------------------------------------------------------------------------


def _download(archive: Archive, root: str, retries: int, timeout: float, progress: bool):
  """Fetches into `<filename>.part`, resuming what is there; -> (size, sha256 hex)."""
  part = os.path.join(root, archive.filename + ".part")
  attempt = 0
  while True:
    try:
      return _transfer(archive, part, timeout, progress)
    except _Interrupted as e:
      attempt += 1
      if attempt > retries:
        raise DownloadError(
          f"the download of {archive.url} stopped at {e.have} of {e.total or '?'} bytes "
          f"after {attempt} attempts ({e.reason}); run --mode=download again to resume "
          f"from {part}"
        ) from None
      logging.warning("Transfer interrupted (%s); resuming (attempt %d)", e.reason, attempt + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
      if workdir_lib.is_disk_full(e):
        raise  # a full disk is not an unreachable server: `jaxvae.main` names what to free
      reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
      if isinstance(e, urllib.error.HTTPError):
        reason = f"HTTP {e.code} {e.reason}"
      elif isinstance(e, ValueError):  # e.g. a mirror URL without http(s)://
        reason = f"not a URL: {e}"
      raise DownloadError(
        unreachable_message(archive, root, str(reason) or type(e).__name__)
      ) from None


class _Interrupted(Exception):
  def __init__(self, have: int, total: int | None, reason: str):
    super().__init__(reason)
    self.have, self.total, self.reason = have, total, reason


def _transfer(archive: Archive, part: str, timeout: float, progress: bool):
  have = os.path.getsize(part) if os.path.exists(part) else 0
  if archive.size is not None and have > archive.size:
    os.replace(part, part[: -len(".part")] + ".rejected")  # longer than the archive can be
    have = 0
  digest = hashlib.sha256()
  if have:
    _hash_into(digest, part, have, progress, desc="resume check")
  headers = {"User-Agent": _USER_AGENT}
  if have:
    headers["Range"] = f"bytes={have}-"
  request = urllib.request.Request(archive.url, headers=headers)
  try:
    response = urllib.request.urlopen(request, timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # nothing after `have`: the part file is the whole archive
      return have, digest.hexdigest()
    raise
  with response:
    if have and response.status != 206:  # the server ignored the range: start over
      have, digest = 0, hashlib.sha256()
    total = _total_length(response, have)
    mode = "ab" if have else "wb"
    bar = tqdm.tqdm(
      total=total,
      initial=have,
      desc=archive.filename,
      unit="B",
      unit_scale=True,
      unit_divisor=1024,
      disable=not progress,
    )
    with open(part, mode) as f, bar:
      while True:
        try:
          chunk = response.read(CHUNK)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
          # a reset, a timeout, an incomplete chunked read
          f.flush()
          raise _Interrupted(have, total, str(e) or type(e).__name__) from None
        if not chunk:
          break
        f.write(chunk)
        f.flush()
        digest.update(chunk)
        have += len(chunk)
        bar.update(len(chunk))
        faults.point("download.chunk", part)
  if total is not None and have < total:
    raise _Interrupted(have, total, "the connection closed early")
  return have, digest.hexdigest()


def _total_length(response, have: int) -> int | None:
  """The whole archive's size as the server states it (Content-Range, else Content-Length)."""
  content_range = response.headers.get("Content-Range", "")
  if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
    return int(content_range.rsplit("/", 1)[1])
  length = response.headers.get("Content-Length")
  return have + int(length) if length and length.isdigit() else None


def _hash_into(digest, path: str, limit: int | None, progress: bool, desc: str) -> int:
  size = os.path.getsize(path) if limit is None else limit
  done = 0
  with (
    open(path, "rb") as f,
    tqdm.tqdm(
      total=size, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
    ) as bar,
  ):
    while done < size:
      block = f.read(min(4 * CHUNK, size - done))
      if not block:
        break
      digest.update(block)
      done += len(block)
      bar.update(len(block))
  return done


def _hash_file(path: str, progress: bool) -> tuple[int, str]:
  digest = hashlib.sha256()
  size = _hash_into(digest, path, None, progress, desc="verify")
  return size, digest.hexdigest()


def _check(archive: Archive, path: str, size: int, digest: str, rejected: str | None) -> None:
  """Raises DownloadError unless size and SHA-256 match; a downloaded file that fails is
  renamed to `rejected` (a hand-placed one, `rejected=None`, is left as it is)."""
  problems = []
  if archive.size is not None and size != archive.size:
    problems.append(f"size {size} bytes, expected {archive.size}")
  if digest != archive.sha256:
    problems.append(f"sha256 {digest}, expected {archive.sha256}")
  if not problems:
    return
  if rejected is None:
    kept = "it was left as it is; replace it with the official archive"
  else:
    os.replace(path, rejected)
    kept = f"it was kept as {rejected}; the next run downloads afresh"
  raise DownloadError(f"archive '{path}' failed verification ({'; '.join(problems)}); {kept}")


# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------


def extract(path: str, root: str, *, strip: int = 0, progress: bool = True) -> dict:
  """Extracts a .tar.gz/.tgz/.tar or .zip archive into `root` (see the module doc) ->
  {'extracted_files', 'existing_files', 'differing_files'}."""
  counts = {"extracted_files": 0, "existing_files": 0, "differing_files": 0}
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as z:
        members = [(m.filename, m.file_size, m.is_dir(), False, m) for m in z.infolist()]
        _extract_members(members, lambda m: z.open(m), root, strip, counts, progress)
    else:
      with tarfile.open(path, "r:*") as t:
        members = [(m.name, m.size, m.isdir(), not (m.isfile() or m.isdir()), m) for m in t]
        _extract_members(members, t.extractfile, root, strip, counts, progress)
  except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
    if workdir_lib.is_disk_full(e):
      raise
    if isinstance(e, OSError) and e.errno is not None:
      raise DownloadError(f"cannot extract '{path}' into '{root}': {e.strerror}") from None
    raise DownloadError(f"archive '{path}' cannot be read as tar or zip ({e})") from None
  if counts["differing_files"]:
    logging.warning(
      "%d files already in %s differ from the archive and were left as they are",
      counts["differing_files"],
      root,
    )
  return counts


def _extract_members(members, open_member, root, strip, counts, progress) -> None:
  real_root = os.path.realpath(root)
  bar = tqdm.tqdm(total=len(members), desc="extract", unit="file", disable=not progress)
  with bar:
    for name, size, is_dir, is_link, member in members:
      bar.update(1)
      rel = _stripped(name, strip)
      if rel is None:
        continue
      target = os.path.realpath(os.path.join(real_root, rel))
      if os.path.commonpath([real_root, target]) != real_root:
        raise DownloadError(f"archive member '{name}' would be written outside '{root}'")
      if is_link:
        raise DownloadError(f"archive member '{name}' is a link or device; refusing to extract")
      if is_dir:
        os.makedirs(target, exist_ok=True)
        continue
      if os.path.exists(target):
        same = os.path.isfile(target) and os.path.getsize(target) == size
        counts["existing_files" if same else "differing_files"] += 1
        continue
      os.makedirs(os.path.dirname(target), exist_ok=True)
      tmp = target + ".jaxvae-part"  # a kill mid-file never leaves it under its real name
      with open_member(member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
      os.replace(tmp, target)
      counts["extracted_files"] += 1
      faults.point("extract.file", target)


def _stripped(name: str, strip: int) -> str | None:
  """The member's path below its first `strip` folders, or None when nothing is left."""
  parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
  if name.startswith("/") or ".." in parts:
    raise DownloadError(f"archive member '{name}' has an absolute or '..' path; refusing it")
  parts = parts[strip:]
  return "/".join(parts) if parts else None


# ----------------------------------------------------------------------------------------------
# The record
# ----------------------------------------------------------------------------------------------


def _read_record(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def _readable(layout: str, root: str) -> bool:
  """Whether the layout's reader finds data in `root` (listing names only)."""
  if layout == "maestro":
    return any(n.startswith("maestro-v") and n.endswith(".csv") for n in _listdir(root))
  try:
    return bool(readers.list_items(layout, root))
  except DataError:
    return False


def _listdir(root: str) -> list[str]:
  try:
    return os.listdir(root)
  except OSError:
    return []
