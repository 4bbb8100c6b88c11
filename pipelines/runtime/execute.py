"""Running one stage through the run directory: skip when done, record in the manifest.

A stage is a :class:`Stage`: its config type, its checks (``validate`` and
``check_upstream``, before any work), the inputs that decide its result
(``fingerprint_inputs``) and ``run(config, workdir) -> StageResult``. Every driver (the command
line, the Python API, the pipeline, the sweep and the search) runs one with :func:`run_stage`;
:func:`execute` decides from the manifest whether it must run, marks it running / done /
failed, and keeps the other workers of a multi-worker run in step with the chief.
"""

import dataclasses
import importlib
import json
import os
import time
import traceback
from typing import Any, Callable, Dict, Optional

from pipelines.config.errors import ConfigError, StageError
from pipelines.data import caching
from pipelines.runtime import distribute, progress, rundir, timing

DATA_CACHE = os.path.join("cache", "data")  # --cache=disk (and auto) file caches, per run


@dataclasses.dataclass
class StageResult:
  """What a stage's ``run`` returns: artifact paths (absolute) and final metrics."""

  artifacts: Dict[str, str]
  metrics: Dict[str, object]


def lazy(module: str, attr: str = "run") -> Callable:
  """``module.attr``, imported at its first call: a stage's work imports TensorFlow at its top,
  while its checks (the stage's own module) must run without it."""
  def call(*args, **kwargs):
    return getattr(importlib.import_module(module), attr)(*args, **kwargs)
  call.__name__, call.__qualname__ = attr, "%s.%s" % (module, attr)
  call.__doc__ = "Runs :func:`%s.%s` (imported on first use)." % (module, attr)
  return call


def _no_upstream(config, workdir: str) -> None:
  del config, workdir


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage as every driver sees it.

  Attributes:
    kind: ``teacher``, ``student``, ...: the stage's kind (a config's ``stage`` property names
      its folder in the run directory, e.g. ``student/small``).
    config_type: the dataclass of its config (:mod:`pipelines.config`).
    validate: ``validate(config)``: every check of the config and its data source, before any
      work; a bad one raises a one-line ConfigError.
    fingerprint_inputs: ``fingerprint_inputs(config, workdir) -> dict``: everything that
      decides the stage's result (the resolved config, the identity of its data and of the
      upstream runs); a change reruns it.
    run: ``run(config, workdir) -> StageResult``.
    check_upstream: ``check_upstream(config, workdir)``: the finished upstream stages it needs,
      read from the manifest only (no data, no TensorFlow), so that a missing one is refused
      first.
    collective: every worker of a multi-worker run runs it (training); ``False``: the chief alone
      (the export), the others wait.
  """

  kind: str
  config_type: type
  validate: Callable[[Any], None]
  fingerprint_inputs: Callable[[Any, str], dict]
  run: Callable[[Any, str], StageResult]
  check_upstream: Callable[[Any, str], None] = _no_upstream
  collective: bool = True


@dataclasses.dataclass
class StageOutcome:
  """A stage's manifest entry after :func:`execute`, and whether it ran or was skipped."""

  name: str
  ran: bool
  entry: dict


def run_stage(stage: Stage, config, workdir: str, force: bool = False,
              log=None) -> StageOutcome:
  """Runs ``stage`` with ``config`` in ``workdir`` unless the manifest says it is done with this
  config: its checks first (``validate``, then ``check_upstream``), then its fingerprint, then
  :func:`execute`."""
  if not isinstance(config, stage.config_type):
    raise TypeError("the %s stage takes a %s, not %s" % (
        stage.kind, stage.config_type.__name__, type(config).__name__))
  stage.validate(config)
  stage.check_upstream(config, workdir)
  return execute(config.stage, stage.run, config, workdir,
                 stage.fingerprint_inputs(config, workdir), force=force, log=log,
                 validate=lambda: None, collective=stage.collective)


def execute(name: str, run_fn: Callable[..., StageResult], config, workdir: str,
            fingerprint_inputs: dict, force: bool = False, log=None,
            validate: Optional[Callable[[], None]] = None,
            collective: bool = True) -> StageOutcome:
  """Runs ``run_fn(config, workdir)`` unless the manifest says it is done with this config.

  ``fingerprint_inputs`` is everything that decides the stage's result (the
  resolved config, the identity of its data and upstream artifacts); a change
  in it reruns the stage. ``validate`` (default: ``config.validate()``; :func:`run_stage`
  passes the stage's own checks, which read the data source too) runs before anything is
  written, so a bad invocation leaves the run directory as it was. ``collective``: see
  :attr:`Stage.collective`. ``log`` (default: :func:`pipelines.runtime.progress.say`) gets the
  progress lines.
  """
  log = log or progress.say
  if validate is None:
    config.validate()
  else:
    validate()
  rundir.backup_interval_seconds()  # a bad KDPRUNE_BACKUP_SECONDS is refused before any work
  rundir.check_workdir(workdir)  # after the flags: a bad invocation leaves no trace
  run = rundir.RunDir(workdir)
  caching.set_root(distribute.output_dir(os.path.join(run.workdir, DATA_CACHE)))
  fp = rundir.fingerprint(fingerprint_inputs)
  if not distribute.is_chief():
    return _execute_as_worker(name, run_fn, config, workdir, run, fp, collective)
  if not force and run.is_done(name, fp):
    entry = run.entry(name)
    log("[%s] done already with this config (%s); skipping (use --force to rerun)" % (
        name, os.path.join(run.workdir, name)))
    distribute.barrier()  # the decision barrier: the workers read this decision after it
    return StageOutcome(name, False, entry)
  entry = run.entry(name) or {}
  if entry.get("status") == "done" and entry.get("fingerprint") == fp:
    for path, problem in run.artifact_problems(name):
      log("[%s] %s is unusable (%s); rerunning the stage" % (name, path, problem))

  os.makedirs(run.stage_dir(name), exist_ok=True)
  _clear_errors(run.stage_dir(name))  # a failed attempt's tracebacks; this attempt's come anew
  run.mark_running(name, fp, fingerprint_inputs)
  # The decision barrier: the workers read the manifest (the new fingerprint, so no stale
  # backup of an older config is resumed) only after the chief has marked the stage running.
  distribute.barrier()
  log("[%s] running -> %s" % (name, run.stage_dir(name)))
  start = time.time()
  timer = timing.start()
  try:
    result = run_fn(config, workdir)
  except BaseException as e:
    if isinstance(e, ConfigError):
      message = str(e)
    elif isinstance(e, KeyboardInterrupt):
      message = "interrupted"
    else:
      message = _one_line("%s: %s" % (type(e).__name__, e))
    error_path, peers = None, ""
    if not isinstance(e, (ConfigError, KeyboardInterrupt)):
      error_path = os.path.join(run.stage_dir(name), ERROR_FILE)
      with open(error_path, "w") as f:
        f.write(traceback.format_exc())
      # A worker that failed first made this process' collectives fail: its cause is the one.
      peers = _worker_errors(run.stage_dir(name), wait=_is_collective_failure(e) and
                             distribute.name() == "multi_worker")
      if peers:
        message = "%s (here: %s)" % (peers, message)
    run.mark_failed(name, message)
    if not collective:
      # The workers wait for this stage at the final barrier (they do not run it): release them;
      # they read the failure from the manifest and raise. (A collective stage's workers are in
      # the stage's own collectives, which fail when this process exits.)
      distribute.barrier()
    if isinstance(e, (ConfigError, KeyboardInterrupt)) or (isinstance(e, StageError) and not peers):
      raise
    # One line for the terminal; the traceback stays in the stage's folder.
    raise StageError(name, "%s (traceback: %s)" % (message, error_path)) from e
  artifacts = {k: run.relpath(v) for k, v in result.artifacts.items()}
  phases = timer.summary()
  _record_phases(run.stage_dir(name), phases)
  entry = run.mark_done(name, artifacts, result.metrics, time.time() - start, phases)
  _final_barrier(run, name)  # the other workers read the manifest after this
  return StageOutcome(name, True, entry)


ERROR_FILE = "error.txt"  # the chief's (or the only process') traceback of a failed stage
_WORKER_ERROR = "error-worker-%d.txt"  # a non-chief worker's, beside it


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _worker_error_files(stage_dir: str):
  return sorted(f for f in os.listdir(stage_dir)
                if f.startswith("error-worker-") and f.endswith(".txt"))


def _clear_errors(stage_dir: str) -> None:
  for f in _worker_error_files(stage_dir) + (
      [ERROR_FILE] if os.path.exists(os.path.join(stage_dir, ERROR_FILE)) else []):
    os.remove(os.path.join(stage_dir, f))


def _poll(read: Callable[[], Any], wait: bool):
  """``read()`` until it gives something, for up to :data:`WORKER_ERROR_WAIT_SECONDS` when
  ``wait`` (a failing peer may still be writing its record), else once."""
  deadline = time.time() + (WORKER_ERROR_WAIT_SECONDS if wait else 0)
  while True:
    found = read()
    if found or time.time() >= deadline:
      return found
    time.sleep(0.5)


def _is_collective_failure(e: BaseException) -> bool:
  """True for the errors a collective raises when a peer has failed or left."""
  tf = distribute.tensorflow()
  return isinstance(e, (tf.errors.UnavailableError, tf.errors.CancelledError,
                        tf.errors.DeadlineExceededError, tf.errors.InternalError,
                        tf.errors.AbortedError))


def _worker_errors(stage_dir: str, wait: bool = False) -> str:
  """The first line of each non-chief worker's failure recorded in ``stage_dir`` ("" if none).

  ``wait``: this process' collectives failed, so a peer may be writing its record: look for up to
  a few seconds.
  """
  found = _poll(lambda: _worker_error_files(stage_dir), wait)
  lines = []
  for f in found:
    path = os.path.join(stage_dir, f)
    try:
      with open(path) as fh:
        first = fh.readline().strip()
    except OSError:
      continue
    lines.append("%s (traceback: %s)" % (first, path))
  return "; ".join(lines)


WORKER_ERROR_WAIT_SECONDS = 10.0


def _final_barrier(run, name: str) -> None:
  """The barrier after the chief recorded the stage done; a worker that failed after its part of
  the training (so that this barrier cannot complete) fails the run with that worker's cause."""
  tf = distribute.tensorflow()
  try:
    distribute.barrier()
  except tf.errors.OpError as e:
    peers = _worker_errors(run.stage_dir(name), wait=True)
    raise StageError(name, "the chief finished this stage but a worker did not: %s" % (
        peers or _one_line("%s: %s" % (type(e).__name__, e)))) from e


def _record_phases(stage_dir: str, phases: dict) -> None:
  """Adds the stage's wall time per phase to its ``metrics.json`` (written by the stage)."""
  path = os.path.join(stage_dir, "metrics.json")
  try:
    with open(path) as f:
      metrics = json.load(f)
  except (OSError, ValueError):
    return  # a stage without metrics.json (the sweep): the manifest has the phases
  metrics["phases"] = phases
  rundir.write_json(path, metrics)


def _execute_as_worker(name, run_fn, config, workdir, run, fp, collective) -> StageOutcome:
  """A non-chief worker: the chief's decision, the same collective training, no manifest writes.

  The worker waits at the decision barrier until the chief has decided (skipped, or marked the
  stage running with the new fingerprint: the chief's decision includes ``force``), then reads
  that decision from the manifest. Stages that are not ``collective`` (e.g. the export) are left
  to the chief; if the chief fails in one, the worker raises the chief's error instead of
  waiting.
  """
  distribute.barrier()  # the decision barrier: after the chief's skip or mark_running
  entry = run.entry(name) or {}
  if entry.get("status") == "done" and entry.get("fingerprint") == fp:
    return StageOutcome(name, False, entry)
  if collective:
    try:
      run_fn(config, workdir)
    except (ConfigError, KeyboardInterrupt):
      raise
    except BaseException as e:  # pylint: disable=broad-except
      if _is_collective_failure(e):
        chief = _chief_failure(run, name, wait=True)
        if chief:  # the chief failed first; this is only the consequence
          raise StageError(name, "the chief failed this stage: %s" % chief) from e
      raise _worker_failure(run, name, e) from e
  tf = distribute.tensorflow()
  try:
    distribute.barrier()  # wait for the chief's manifest
  except tf.errors.OpError as e:
    chief = _chief_failure(run, name, wait=True)
    raise StageError(name, "the chief failed this stage: %s" % (
        chief or "it left without a word (%s)" % _one_line("%s: %s" % (type(e).__name__, e)))
    ) from e
  entry = run.entry(name) or {}
  if entry.get("status") == "failed":
    raise StageError(name, "the chief failed this stage: %s" % entry.get("error"))
  return StageOutcome(name, True, entry)


def _chief_failure(run, name: str, wait: bool = False) -> Optional[str]:
  """The error the chief recorded for stage ``name`` in the manifest, else None; ``wait``: give
  a chief that is failing a few seconds to record it."""
  def recorded():
    try:
      entry = run.entry(name) or {}
    except Exception:  # pylint: disable=broad-except
      entry = {}  # an unreadable manifest: no record to report
    return entry.get("error") if entry.get("status") == "failed" else None
  return _poll(recorded, wait)


def _worker_failure(run, name: str, e: BaseException) -> StageError:
  """A non-chief worker's own failure: its traceback beside the chief's ``error.txt`` (the first
  line says which worker and why, for the chief's one line), and the one line for this worker."""
  index, _ = distribute.worker_index_and_count()
  if isinstance(e, StageError):
    cause = str(e)
  else:
    cause = _one_line("%s: %s" % (type(e).__name__, e))
  path = os.path.join(run.stage_dir(name), _WORKER_ERROR % index)
  try:
    with open(path, "w") as f:
      f.write("worker %d: %s\n\n%s" % (index, cause, traceback.format_exc()))
  except OSError:
    path = None  # the run directory is not shared: the line below still names the cause
  return StageError(name, "worker %d failed: %s%s" % (
      index, cause, " (traceback: %s)" % path if path else ""))
