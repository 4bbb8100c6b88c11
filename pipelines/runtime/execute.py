"""Running one stage through the run directory: skip when done, record in the manifest.

A stage is a ``run(config, workdir) -> StageResult`` function; :func:`execute`
validates its config, decides from the manifest whether it must run, marks it
running / done / failed, and keeps the other workers of a multi-worker run in
step with the chief.
"""

import dataclasses
import json
import os
import time
import traceback
from typing import Callable, Dict, Optional

from pipelines.config.errors import ConfigError, StageError
from pipelines.data import caching
from pipelines.runtime import distribute, progress, rundir, timing

DATA_CACHE = os.path.join("cache", "data")  # --cache=disk (and auto) file caches, per run


@dataclasses.dataclass
class StageResult:
  """What a stage's ``run`` returns: artifact paths (absolute) and final metrics."""

  artifacts: Dict[str, str]
  metrics: Dict[str, object]


@dataclasses.dataclass
class StageOutcome:
  """A stage's manifest entry after :func:`execute`, and whether it ran or was skipped."""

  name: str
  ran: bool
  entry: dict


def execute(name: str, run_fn: Callable[..., StageResult], config, workdir: str,
            fingerprint_inputs: dict, force: bool = False, log=None,
            validate: Optional[Callable[[], None]] = None) -> StageOutcome:
  """Runs ``run_fn(config, workdir)`` unless the manifest says it is done with this config.

  ``fingerprint_inputs`` is everything that decides the stage's result (the
  resolved config, the identity of its data and upstream artifacts); a change
  in it reruns the stage. ``validate`` (default: ``run_fn.validate(config)``, the
  stage's own checks, which read the data source too, else ``config.validate()``)
  runs before anything is written, so a bad invocation leaves the run directory
  as it was. ``log``
  (default: :func:`pipelines.runtime.progress.say`) gets the progress lines.
  """
  log = log or progress.say
  if validate is None:
    getattr(run_fn, "validate", type(config).validate)(config)
  else:
    validate()
  rundir.backup_interval_seconds()  # a bad KDPRUNE_BACKUP_SECONDS is refused before any work
  rundir.check_workdir(workdir)  # after the flags: a bad invocation leaves no trace
  run = rundir.RunDir(workdir)
  caching.set_root(distribute.output_dir(os.path.join(run.workdir, DATA_CACHE)))
  fp = rundir.fingerprint(fingerprint_inputs)
  if not distribute.is_chief():
    return _execute_as_worker(name, run_fn, config, workdir, run, fp, force)
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
      message = "%s: %s" % (type(e).__name__, e)
    run.mark_failed(name, message)
    if not isinstance(e, (ConfigError, KeyboardInterrupt)):
      with open(os.path.join(run.stage_dir(name), "error.txt"), "w") as f:
        f.write(traceback.format_exc())
    if not getattr(run_fn, "collective", True):
      # The workers wait for this stage at the final barrier (they do not run it): release them;
      # they read the failure from the manifest and raise. (A collective stage's workers are in
      # the stage's own collectives, which fail when this process exits.)
      distribute.barrier()
    raise
  artifacts = {k: run.relpath(v) for k, v in result.artifacts.items()}
  phases = timer.summary()
  _record_phases(run.stage_dir(name), phases)
  entry = run.mark_done(name, artifacts, result.metrics, time.time() - start, phases)
  distribute.barrier()  # the other workers read the manifest after this
  return StageOutcome(name, True, entry)


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


def _execute_as_worker(name, run_fn, config, workdir, run, fp, force) -> StageOutcome:
  """A non-chief worker: the chief's decision, the same collective training, no manifest writes.

  The worker waits at the decision barrier until the chief has decided (skipped, or marked the
  stage running with the new fingerprint), then reads that decision from the manifest. Stages
  that are not collective (``run_fn.collective = False``, e.g. the export) are left to the
  chief; if the chief fails in one, the worker raises the chief's error instead of waiting.
  """
  del force  # the chief's decision, read from the manifest, already includes it
  distribute.barrier()  # the decision barrier: after the chief's skip or mark_running
  entry = run.entry(name) or {}
  if entry.get("status") == "done" and entry.get("fingerprint") == fp:
    return StageOutcome(name, False, entry)
  if getattr(run_fn, "collective", True):
    run_fn(config, workdir)
  distribute.barrier()  # wait for the chief's manifest
  entry = run.entry(name) or {}
  if entry.get("status") == "failed":
    raise StageError(name, "the chief failed this stage: %s" % entry.get("error"))
  return StageOutcome(name, True, entry)
