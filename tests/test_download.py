"""--mode=download against archives made here and served from 127.0.0.1 (stdlib http.server
with range requests); no test touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from conftest import load_config
from jaxvae import errors
from jaxvae import main
from jaxvae.data import download
from jaxvae.data import readers
from jaxvae.data import sources

GENRES = ("blues", "jazz")


class _Server(http.server.ThreadingHTTPServer):
  files: dict[str, bytes]
  drop_after: int = 0  # > 0: the next full or ranged response stops after this many bytes
  requests: list[dict]


class _Handler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):  # quiet
    pass

  def do_GET(self):  # noqa: N802 - the stdlib's name
    server = self.server
    server.requests.append({"path": self.path, "range": self.headers.get("Range")})
    data = server.files.get(self.path)
    if data is None:
      self.send_error(404)
      return
    start = 0
    rng = self.headers.get("Range")
    if rng and rng.startswith("bytes="):
      start = int(rng[len("bytes=") :].split("-")[0])
      if start >= len(data):
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{len(data)}")
        self.end_headers()
        return
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
      self.send_response(200)
    body = data[start:]
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Accept-Ranges", "bytes")
    self.end_headers()
    if server.drop_after:
      cut, server.drop_after = server.drop_after, 0
      self.wfile.write(body[:cut])
      self.wfile.flush()
      self.close_connection = True
      return
    self.wfile.write(body)


@pytest.fixture
def server():
  srv = _Server(("127.0.0.1", 0), _Handler)
  srv.files, srv.requests = {}, []
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  yield srv
  srv.shutdown()
  srv.server_close()


# A fetch in a child process, so a fault point can kill it.
_FETCH = (
  "import sys, json; from jaxvae.data import download as d; a = d.Archive(**json.loads("
  "sys.argv[1])); d.fetch('gtzan', a, sys.argv[2], progress=False)"
)


def _url(srv, name):
  return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def _gtzan_tar(noise_bytes: int = 700_000) -> bytes:
  """A GTZAN-shaped archive: genres/<genre>/<genre>.0000N.au plus an incompressible file so
  the transfer spans several chunks."""
  buf = io.BytesIO()
  rng = np.random.default_rng(0)
  with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for genre in GENRES:
      for k in range(2):
        payload = rng.bytes(2000)
        info = tarfile.TarInfo(f"genres/{genre}/{genre}.0000{k}.au")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    payload = rng.bytes(noise_bytes)
    info = tarfile.TarInfo("genres/README.bin")
    info.size = len(payload)
    t.addfile(info, io.BytesIO(payload))
  return buf.getvalue()


def _archive(data: bytes, url: str, filename="genres.tar.gz", strip=0) -> download.Archive:
  return download.Archive(
    filename=filename,
    url=url,
    sha256=hashlib.sha256(data).hexdigest(),
    size=len(data),
    approx="1 MB",
    strip=strip,
  )


def test_good_download_extracts_the_reader_layout_and_records_it(server, tmp_path):
  data = _gtzan_tar()
  server.files["/genres.tar.gz"] = data
  root = tmp_path / "gtzan"
  out = download.fetch(
    "gtzan", _archive(data, _url(server, "genres.tar.gz")), str(root), progress=False
  )
  assert out.action == "downloaded"
  items = readers.list_items("gtzan", str(root))
  assert sorted({it.labels["genre"] for it in items}) == list(GENRES) and len(items) == 4
  record = json.load(open(root / download.RECORD))
  assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
  assert record["extracted_files"] == 5 and record["archive_kept"] is False
  assert not (root / "genres.tar.gz").exists() and not (root / "genres.tar.gz.part").exists()
  # A verified copy is not fetched again.
  n = len(server.requests)
  again = download.fetch(
    "gtzan", _archive(data, _url(server, "genres.tar.gz")), str(root), progress=False
  )
  assert again.action == "present" and len(server.requests) == n


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
  data = _gtzan_tar()
  server.files["/genres.tar.gz"] = data
  server.drop_after = 300_000
  root = tmp_path / "gtzan"
  archive = _archive(data, _url(server, "genres.tar.gz"))
  out = download.fetch("gtzan", archive, str(root), progress=False, keep_archive=True)
  assert out.action == "downloaded"
  assert [r["range"] for r in server.requests] == [None, "bytes=300000-"]
  assert (root / "genres.tar.gz").read_bytes() == data


def test_a_killed_download_resumes_on_the_next_run(server, tmp_path):
  """Fault injection: the process dies (SIGKILL) after its second chunk; the next run sends
  a range request from where the .part file ends and finishes with a verified archive."""
  data = _gtzan_tar()
  server.files["/genres.tar.gz"] = data
  root = tmp_path / "gtzan"
  archive = _archive(data, _url(server, "genres.tar.gz"))
  env = dict(os.environ, JAXVAE_FAULT="download.chunk:2")
  spec = json.dumps(archive.__dict__)
  proc = subprocess.run([sys.executable, "-c", _FETCH, spec, str(root)], env=env, check=False)
  assert proc.returncode == -9
  assert (root / "genres.tar.gz.part").stat().st_size == 2 * download.CHUNK
  out = download.fetch("gtzan", archive, str(root), progress=False)
  assert out.action == "downloaded"
  assert server.requests[-1]["range"] == f"bytes={2 * download.CHUNK}-"
  assert len(readers.list_items("gtzan", str(root))) == 4


def test_a_killed_extraction_finishes_on_the_next_run(tmp_path):
  """Fault injection: killed after the second extracted file; no half-written file is left
  under a real name, and the re-run extracts the rest and counts the first two as present."""
  data = _gtzan_tar(noise_bytes=1000)
  root = tmp_path / "gtzan"
  root.mkdir()
  (root / "genres.tar.gz").write_bytes(data)
  archive = _archive(data, "http://127.0.0.1:9/genres.tar.gz")
  env = dict(os.environ, JAXVAE_FAULT="extract.file:2")
  proc = subprocess.run(
    [sys.executable, "-c", _FETCH, json.dumps(archive.__dict__), str(root)], env=env, check=False
  )
  assert proc.returncode == -9 and not (root / download.RECORD).exists()
  out = download.fetch("gtzan", archive, str(root), progress=False)
  assert out.record["existing_files"] == 2 and out.record["extracted_files"] == 3
  assert out.record["differing_files"] == 0
  assert len(readers.list_items("gtzan", str(root))) == 4


def test_a_run_killed_after_its_record_is_cleaned_up_by_the_next(server, tmp_path):
  """Fault injection at download.record: the dataset is extracted and recorded, the
  downloaded archive not yet removed; the next run fetches nothing and removes it."""
  data = _gtzan_tar(noise_bytes=1000)
  server.files["/genres.tar.gz"] = data
  root = tmp_path / "gtzan"
  archive = _archive(data, _url(server, "genres.tar.gz"))
  env = dict(os.environ, JAXVAE_FAULT="download.record:1")
  proc = subprocess.run(
    [sys.executable, "-c", _FETCH, json.dumps(archive.__dict__), str(root)], env=env, check=False
  )
  assert proc.returncode == -9 and (root / "genres.tar.gz").exists()
  requests = len(server.requests)
  out = download.fetch("gtzan", archive, str(root), progress=False)
  assert out.action == "present" and len(server.requests) == requests
  assert set(os.listdir(root)) == {download.RECORD, "genres"}


def test_a_corrupted_download_is_refused_and_kept(server, tmp_path):
  data = _gtzan_tar()
  bad = bytearray(data)
  bad[1000] ^= 0xFF
  server.files["/genres.tar.gz"] = bytes(bad)
  root = tmp_path / "gtzan"
  root.mkdir()
  (root / "notes.txt").write_text("mine")
  with pytest.raises(errors.DownloadError) as e:
    download.fetch(
      "gtzan", _archive(data, _url(server, "genres.tar.gz")), str(root), progress=False
    )
  message = str(e.value)
  assert "genres.tar.gz" in message and hashlib.sha256(data).hexdigest() in message
  assert (root / "genres.tar.gz.rejected").read_bytes() == bytes(bad)
  assert (root / "notes.txt").read_text() == "mine"
  assert not (root / "genres").exists() and not (root / download.RECORD).exists()


def test_a_hand_placed_archive_is_verified_extracted_and_left(tmp_path):
  """Offline: the archive the user put in root is checked and extracted; it stays there, and
  a file of theirs that differs from the archive's is not overwritten."""
  data = _gtzan_tar()
  root = tmp_path / "gtzan"
  (root / "genres" / "blues").mkdir(parents=True)
  (root / "genres.tar.gz").write_bytes(data)
  (root / "genres" / "blues" / "blues.00000.au").write_bytes(b"edited by the user")
  archive = _archive(data, "http://127.0.0.1:9/unreachable/genres.tar.gz")
  out = download.fetch("gtzan", archive, str(root), progress=False)
  assert out.action == "local" and out.record["archive_kept"] is True
  assert out.record["differing_files"] == 1 and out.record["extracted_files"] == 4
  assert (root / "genres.tar.gz").read_bytes() == data
  assert (root / "genres" / "blues" / "blues.00000.au").read_bytes() == b"edited by the user"
  # A hand-placed archive that fails is named and left alone.
  other = tmp_path / "other"
  other.mkdir()
  (other / "genres.tar.gz").write_bytes(data[:-10])
  with pytest.raises(errors.DownloadError, match="left as it is"):
    download.fetch("gtzan", archive, str(other), progress=False)
  assert (other / "genres.tar.gz").read_bytes() == data[:-10]


def test_maestro_zip_loses_its_top_folder_and_paths_outside_root_are_refused(tmp_path):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", "canonical_composer,year\n")
    z.writestr("maestro-v3.0.0/2004/a.midi", b"MThd")
  root = tmp_path / "maestro"
  root.mkdir()
  (root / "maestro-v3.0.0-midi.zip").write_bytes(buf.getvalue())
  archive = _archive(buf.getvalue(), "http://127.0.0.1:9/x.zip", "maestro-v3.0.0-midi.zip", 1)
  download.fetch("maestro", archive, str(root), progress=False)
  assert (root / "maestro-v3.0.0.csv").exists() and (root / "2004" / "a.midi").exists()
  evil = io.BytesIO()
  with tarfile.open(fileobj=evil, mode="w:gz") as t:
    info = tarfile.TarInfo("../escape.txt")
    info.size = 1
    t.addfile(info, io.BytesIO(b"x"))
  (tmp_path / "evil.tar.gz").write_bytes(evil.getvalue())
  with pytest.raises(errors.DownloadError, match="'..' path"):
    download.extract(str(tmp_path / "evil.tar.gz"), str(tmp_path / "out"), progress=False)
  assert not (tmp_path / "escape.txt").exists()


def _download_argv(tmp_path, root, url: str) -> list[str]:
  """`--mode=download` of GTZAN into `root` from `url`."""
  return [
    "--config=configs/conv_vae.py:small",
    f"--workdir={tmp_path / 'run'}",
    "--mode=download",
    "--no_progress",
    "--config.data.layout=gtzan",
    f"--config.data.root={root}",
    f"--config.data.download.url={url}",
  ]


def test_cli_offline_is_one_line_and_a_mirror_with_its_checksum_works(server, tmp_path, capsys):
  root = tmp_path / "gtzan"
  argv = _download_argv(tmp_path, root, "http://127.0.0.1:9/genres.tar.gz")  # port 9: refused
  assert main.run(argv) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: cannot download http://127.0.0.1:9/")
  assert f"place genres.tar.gz (1.2 GB) in {root} by hand" in err[0]
  data = _gtzan_tar(noise_bytes=1000)
  server.files["/mirror.tgz"] = data
  argv[-1] = f"--config.data.download.url={_url(server, 'mirror.tgz')}"
  argv += [
    f"--config.data.download.sha256={hashlib.sha256(data).hexdigest()}",
    f"--config.data.download.size={len(data)}",
  ]
  assert main.run(argv) == 0
  assert "5 files extracted" in capsys.readouterr().out  # 4 clips and the README
  report = json.load(open(tmp_path / "run" / "download.json"))
  assert report[0]["action"] == "downloaded" and report[0]["extracted_files"] == 5
  assert len(readers.list_items("gtzan", str(root))) == 4


def test_a_verified_download_killed_before_extraction_is_still_ours(tmp_path):
  """A downloaded archive verified and renamed, then killed before extraction, is deleted by
  the next run once extracted (it is jaxvae's, not the user's); a mirror URL without a scheme
  is one clear error."""
  data = _gtzan_tar(noise_bytes=1000)
  root = tmp_path / "gtzan"
  root.mkdir()
  (root / "genres.tar.gz").write_bytes(data)
  (root / "genres.tar.gz.jaxvae-downloaded").write_text("http://example/genres.tar.gz")
  out = download.fetch("gtzan", _archive(data, "http://127.0.0.1:9/x"), str(root), progress=False)
  assert out.action == "downloaded" and out.record["archive_kept"] is False
  assert set(os.listdir(root)) == {download.RECORD, "genres"}
  with pytest.raises(errors.DownloadError, match="not a URL"):
    download.fetch(
      "gtzan",
      _archive(data, "mirror.example.org/genres.tar.gz"),
      str(tmp_path / "g2"),
      progress=False,
    )


def test_the_table_covers_every_downloadable_layout():
  for layout in download.DOWNLOADABLE:
    a = download.archive_for(layout, "audio")
    assert len(a.sha256) == 64 and a.url.startswith("http") and a.filename in a.url
  assert download.archive_for("maestro", "midi").filename == "maestro-v3.0.0-midi.zip"
  with pytest.raises(errors.DataError, match="folder"):
    download.archive_for("folder", "audio")


def _readme_download_commands() -> list[list[str]]:
  text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "DATA.md")).read()
  text = text.replace("\\\n", " ")
  commands = []
  for line in text.splitlines():
    if "python -m jaxvae.main" in line and "--mode=download" in line:
      args = line.split("python -m jaxvae.main", 1)[1].split("#")[0].split()
      commands.append(args)
  return commands


def test_the_readme_download_commands_pick_their_archives(tmp_path, capsys):
  """Each README command loads and asks for the archive its comment names (sent to a closed
  port on 127.0.0.1, so the one-line offline error shows which)."""
  commands = _readme_download_commands()
  expected = [
    "genres.tar.gz",
    "speech_commands_v0.02.tar.gz",
    "maestro-v3.0.0-midi.zip",
    "maestro-v3.0.0.zip",
  ]
  assert len(commands) == len(expected)
  cwd = os.getcwd()
  os.chdir(os.path.join(os.path.dirname(__file__), ".."))
  try:
    for args, name in zip(commands, expected):
      args = [
        a.replace("runs/dl", str(tmp_path / "dl")).replace("data/", f"{tmp_path}/") for a in args
      ]
      args += ["--no_progress", "--config.data.download.url=http://127.0.0.1:9/x"]
      assert main.run(args) == 1
      err = capsys.readouterr().err
      assert f"place {name} (" in err, err
  finally:
    os.chdir(cwd)


def test_the_combined_config_downloads_gtzan_and_maestro_audio():
  config = load_config("harmonic_combined.py", {})
  layouts = [s.layout for s in sources.of_config(config)]
  assert layouts == ["gtzan", "maestro", "folder"]
  names = [
    download.archive_for(s.layout, config.data.kind).filename
    for s in sources.of_config(config)
    if s.layout in download.DOWNLOADABLE
  ]
  assert names == ["genres.tar.gz", "maestro-v3.0.0.zip"]


@pytest.mark.parametrize("point", ["download.chunk", "extract.file"])
def test_a_full_disk_while_downloading_or_extracting_is_one_line(server, tmp_path, capsys, point):
  """ENOSPC in the transfer or the extraction is a full disk naming the file, not an
  unreachable server or an unreadable archive; the .part file stays for the next run."""
  from jaxvae import faults

  data = _gtzan_tar()
  server.files["/mirror.tgz"] = data
  root = tmp_path / "gtzan"
  argv = _download_argv(tmp_path, root, _url(server, "mirror.tgz")) + [
    f"--config.data.download.sha256={hashlib.sha256(data).hexdigest()}",
    f"--config.data.download.size={len(data)}",
  ]
  faults.set_faults(f"{point}:1:ENOSPC")
  try:
    assert main.run(argv) == 1
  finally:
    faults.set_faults(None)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert err[0].startswith("error: no space left on the device while running --mode=download")
  assert str(root) in err[0] and "run the same command again" in err[0]
  assert main.run(argv) == 0  # space is back: the same command finishes
  assert len(readers.list_items("gtzan", str(root))) == 4
