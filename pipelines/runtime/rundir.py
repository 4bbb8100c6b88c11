"""The run directory: one folder per stage and ``manifest.json`` that chains them.

``manifest.json``::

  {"version": 1,
   "stages": {"teacher": {"status": "done" | "running" | "failed",
                          "fingerprint": "<sha256 of the resolved config and inputs>",
                          "config": {...}, "artifacts": {"model": "teacher/model.keras", ...},
                          "metrics": {...}, "started": iso, "finished": iso,
                          "wall_seconds": float, "error": "..."}}}

Every file kdprune writes here goes through :func:`atomic_write` (write aside,
then rename), so a killed run never leaves a half-written manifest or
artifact behind a "done" status. Several processes may share one run directory (the
search's parallel tasks): every read-modify-write of the manifest holds an exclusive
``fcntl.flock`` on ``manifest.lock`` beside it, so no process's entry is lost; readers need no
lock, since the manifest is only ever replaced whole.
"""

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from typing import Dict, List, Optional, Tuple

import h5py

from pipelines.config.errors import ConfigError

MANIFEST = "manifest.json"
LOCK = "manifest.lock"  # beside the manifest: held around every read-modify-write
_VERSION = 1


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fingerprint(obj) -> str:
  """Stable sha256 of a JSON-able object (dict keys sorted)."""
  blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def content_hash(path: str) -> str:
  """sha256 of the file, or of every file of a SavedModel directory (names and bytes): a changed
  file (a teacher, a student's start weights, data) reruns what was made from it."""
  digest = hashlib.sha256()
  files = [path] if not os.path.isdir(path) else sorted(
      os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
  for name in files:
    digest.update(os.path.relpath(name, path).encode() if name != path else b"")
    with open(name, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields a temporary path beside ``path``; renames it onto ``path`` on success.

  For writers that need a file name (``model.save``, ``save_weights``). The
  temporary ends with the whole base name (``.<random>.model.weights.h5``),
  since Keras picks the format from the suffix. For a directory (a
  SavedModel), the writer creates it; an old one at ``path`` is replaced.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".", suffix="." + os.path.basename(path), dir=directory)
  os.close(fd)
  os.remove(tmp)  # writers such as Keras refuse or append to an existing file
  old = None
  try:
    yield tmp
    if os.path.isdir(tmp):
      if os.path.exists(path):  # a directory cannot be renamed onto another one
        old = tmp + ".old"
        os.replace(path, old)
      os.replace(tmp, path)
    else:
      os.replace(tmp, path)
  finally:
    for leftover in (tmp, old):
      if leftover and os.path.isdir(leftover):
        shutil.rmtree(leftover, ignore_errors=True)
      elif leftover and os.path.exists(leftover):
        os.remove(leftover)


def atomic_write(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())


def fresh_stage_logs(stage_dir: str, keep: bool = False):
  """Creates ``stage_dir`` and clears its previous logs; returns ``(tb_dir, metrics_jsonl)``.

  A rerun replaces a stage's TensorBoard logs and per-epoch lines rather than
  interleaving two runs' curves; a resumed run (``keep``) continues them.
  Artifacts are left alone: they are replaced atomically when the new ones
  are ready.
  """
  tb_dir = os.path.join(stage_dir, "tb")
  jsonl = os.path.join(stage_dir, "metrics.jsonl")
  if not keep:
    shutil.rmtree(tb_dir, ignore_errors=True)
    if os.path.exists(jsonl):
      os.remove(jsonl)
  os.makedirs(stage_dir, exist_ok=True)
  return tb_dir, jsonl


def write_json(path: str, obj) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def artifact_problem(path: str) -> Optional[str]:
  """Why the artifact at ``path`` cannot be used (missing, truncated, corrupt), or None.

  Checked without TensorFlow: a ``.keras`` file must be a zip archive whose
  members pass their CRC checks and hold a config and weights; an ``.h5``
  file must open with h5py; a ``.json`` file must parse; other files (and
  directories) must exist and, if files, be non-empty.
  """
  if not os.path.exists(path):
    return "missing"
  if os.path.isdir(path):
    return None
  try:
    if path.endswith(".keras"):
      with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
          return "member %s fails its CRC check" % bad
        names = set(archive.namelist())
        if not {"config.json", "model.weights.h5"} <= names:
          return "not a Keras model archive (members: %s)" % ", ".join(sorted(names))
    elif path.endswith(".h5"):
      with h5py.File(path, "r") as f:
        list(f.keys())
    elif path.endswith(".json"):
      with open(path) as f:
        json.load(f)
    elif os.path.getsize(path) == 0:
      return "empty file"
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    return " ".join(str(e).split())[:160] or type(e).__name__
  return None


DEFAULT_BACKUP_SECONDS = 30.0


def backup_interval_seconds(environ=os.environ) -> float:
  """The least time between two in-stage backups of a single process: ``KDPRUNE_BACKUP_SECONDS``
  (default 30; 0: every epoch). See :mod:`pipelines.train.backup`."""
  text = environ.get("KDPRUNE_BACKUP_SECONDS", "")
  try:
    value = float(text) if text else DEFAULT_BACKUP_SECONDS
  except ValueError:
    raise ConfigError("KDPRUNE_BACKUP_SECONDS=%s is not a number of seconds" % text) from None
  if not value >= 0:
    raise ConfigError("KDPRUNE_BACKUP_SECONDS=%s must be >= 0" % text)
  return value


def check_workdir(workdir: str) -> None:
  """Raises ``ConfigError`` (one line) unless ``workdir`` is a directory kdprune can create and write.

  Creates nothing: an existing ``workdir`` gets a temporary file written and
  removed; a missing one is checked through its nearest existing ancestor,
  where a temporary directory is made and removed (``os.access`` is no test:
  root passes it for ``/proc``, where nothing can be created).
  """
  flag = "--workdir=%s" % workdir
  path = os.path.abspath(workdir)
  probe_dir = path
  while not os.path.exists(probe_dir):
    probe_dir = os.path.dirname(probe_dir)
  if not os.path.isdir(probe_dir):
    raise ConfigError("%s: %s is not a directory" % (flag, probe_dir))
  try:
    if probe_dir == path:
      with tempfile.TemporaryFile(dir=path, prefix=".kdprune-probe-"):
        pass
    else:
      os.rmdir(tempfile.mkdtemp(dir=probe_dir, prefix=".kdprune-probe-"))
  except OSError as e:
    where = "written" if probe_dir == path else "created under %s" % probe_dir
    raise ConfigError("%s cannot be %s (%s)" % (flag, where, e.strerror or e)) from None


class RunDir:
  """A run directory and its manifest."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)

  @property
  def manifest_path(self) -> str:
    return os.path.join(self.workdir, MANIFEST)

  def stage_dir(self, stage: str) -> str:
    return os.path.join(self.workdir, stage)

  def relpath(self, path: str) -> str:
    return os.path.relpath(os.path.abspath(path), self.workdir)

  def abspath(self, rel: str) -> str:
    return os.path.join(self.workdir, rel)

  def load(self) -> dict:
    if not os.path.exists(self.manifest_path):
      return {"version": _VERSION, "stages": {}}
    try:
      with open(self.manifest_path) as f:
        manifest = json.load(f)
      if not isinstance(manifest, dict) or not isinstance(manifest.get("stages", {}), dict):
        raise ValueError("not a kdprune manifest")
    except (OSError, ValueError) as e:
      raise ConfigError("%s is unreadable (%s); move it aside to start this run directory "
                        "afresh" % (self.manifest_path, str(e).splitlines()[0])) from None
    manifest.setdefault("stages", {})
    return manifest

  def entry(self, stage: str) -> Optional[dict]:
    return self.load()["stages"].get(stage)

  @contextlib.contextmanager
  def locked(self, name: str = LOCK):
    """Holds the run directory's exclusive lock ``name`` (default: the manifest's), blocking until
    other processes let go."""
    os.makedirs(self.workdir, exist_ok=True)
    with open(os.path.join(self.workdir, name), "a") as f:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

  def _update(self, stage: str, **fields) -> dict:
    with self.locked():  # another process's update between load and write would be lost
      manifest = self.load()
      entry = manifest["stages"].setdefault(stage, {})
      entry.update(fields)
      manifest["version"] = _VERSION
      manifest["workdir"] = self.workdir
      write_json(self.manifest_path, manifest)
    return entry

  def is_done(self, stage: str, fp: str) -> bool:
    """True if ``stage`` finished with fingerprint ``fp`` and its artifacts are all readable."""
    entry = self.entry(stage)
    if not entry or entry.get("status") != "done" or entry.get("fingerprint") != fp:
      return False
    return not self.artifact_problems(stage)

  def artifact_problems(self, stage: str) -> List[Tuple[str, str]]:
    """``[(absolute path, problem)]`` for the recorded artifacts of ``stage`` that are unusable."""
    entry = self.entry(stage) or {}
    problems = []
    for rel in entry.get("artifacts", {}).values():
      problem = artifact_problem(self.abspath(rel))
      if problem:
        problems.append((self.abspath(rel), problem))
    return problems

  def mark_running(self, stage: str, fp: str, config: dict) -> None:
    self._update(stage, status="running", fingerprint=fp, config=config, started=now(),
                 finished=None, wall_seconds=None, phases=None, error=None, artifacts={},
                 metrics={})

  def mark_done(self, stage: str, artifacts: Dict[str, str], metrics: dict,
                wall_seconds: float, phases: Optional[Dict[str, float]] = None) -> dict:
    return self._update(stage, status="done", artifacts=artifacts, metrics=metrics,
                        finished=now(), wall_seconds=round(wall_seconds, 3), phases=phases,
                        error=None)

  def mark_failed(self, stage: str, error: str) -> None:
    self._update(stage, status="failed", finished=now(), error=error)
