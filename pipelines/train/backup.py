"""Resume inside a stage: an epoch-end backup of everything training needs to go on.

A training stage backs up, at the end of an epoch, under
``<workdir>/<stage>/backup/``:

* a TensorFlow checkpoint of the trained model (for a student: the pruning
  wrappers with their masks, thresholds and ``pruning_step``; for QAT: the
  quantizers' ranges) and of the optimizer (its slots and ``iterations``,
  which also drive the learning-rate schedule);
* the early-stopping state (best value and epoch, patience used, the best
  weights so far) and the stage's own counters;
* ``latest.json``, written last and atomically: the commit point. Until it
  names a complete backup, the previous one stays in force, so a ``kill -9``
  at any moment leaves either the old or the new backup, never half of one.

A single process backs up at the end of the first epoch that ends at least
``KDPRUNE_BACKUP_SECONDS`` (default 30) after the previous backup: a kill loses
at most that much training, and short epochs do not pay a checkpoint each (on
the embedded data a backup cost 0.1 s of a 0.8 s epoch). ``0`` backs up every
epoch. The workers of a multi-worker run back up every epoch (writing a
checkpoint is collective, so every worker must decide alike).

A rerun of the same command calls :meth:`StageBackup.restore` before
``fit``: it loads the latest backup and returns the epoch to continue from
(``fit(initial_epoch=...)``). The backup is deleted when the stage finishes.
A backup made with a different config is never used: the stage's fingerprint
is part of it.
"""

import glob
import json
import os
import shutil
import time
from typing import Optional

import numpy as np

from models.compat import keras, tf
from pipelines.runtime import distribute, rundir

LATEST = "latest.json"


def latest(directory: str, fingerprint: Optional[str]) -> Optional[dict]:
  """The committed backup in ``directory`` made with ``fingerprint``, or None."""
  path = os.path.join(directory, LATEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      found = json.load(f)
  except (OSError, ValueError):
    return None
  return found if found.get("fingerprint") == fingerprint else None


class StageBackup(keras.callbacks.Callback):
  """Epoch-end backups of ``model`` + ``optimizer`` + ``early``'s state; restore on rerun.

  Args:
    directory: ``<workdir>/<stage>/backup``.
    fingerprint: the stage's fingerprint; a backup with another one is discarded.
    model: the model whose weights train (the teacher, the pruned student or the QAT
      model; not the distillation trainer, which also holds the teacher).
    optimizer: its optimizer (built before restoring, so slots restore at once).
    variables: the variables the optimizer updates.
    early: a :class:`pipelines.callbacks.PruningAwareEarlyStopping` whose state is kept.
    write_directory: where this process writes backups: ``directory`` on the chief; a
      private one on the other workers of a multi-worker run, which restore from the
      chief's ``directory`` (the run directory is shared) but never write it.
    extra: further trackable state of the stage (e.g. dynamic pruning's counters), or None.
    shape: ``shape() -> dict``: the model's shape now, recorded with each backup for a model
      that changes shape between epochs (the channel phases), or None.
  """

  def __init__(self, directory: str, fingerprint: str, model, optimizer, variables, early,
               write_directory: Optional[str] = None, extra=None, shape=None):
    super().__init__()
    self.directory = directory
    self.write_directory = write_directory or directory
    self.fingerprint = fingerprint
    self.optimizer = optimizer
    self.variables = list(variables)
    self.early = early
    self.shape = shape
    self.resumed_from: Optional[int] = None
    self.written: Optional[int] = None  # the epochs done at the last backup this run wrote or read
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                          **({"extra": extra} if extra is not None else {}))
    self.interval = 0.0 if distribute.name() == "multi_worker" else rundir.backup_interval_seconds()
    self._last = time.monotonic()

  # -- restore -------------------------------------------------------------

  def latest(self) -> Optional[dict]:
    return latest(self.directory, self.fingerprint)

  def restore(self) -> int:
    """Loads the latest backup if there is one for this config; returns the epochs already done."""
    latest = self.latest()
    if latest is None:
      self.clear(self.write_directory)  # another config's, or incomplete
      return 0
    # Slots exist, so they restore now, not deferred (inside a LossScaleOptimizer, its inner one).
    getattr(self.optimizer, "inner_optimizer", self.optimizer).build(self.variables)
    status = self.checkpoint.read(os.path.join(self.directory, latest["checkpoint"]))
    # Metric accumulators Keras creates at the first step are in the checkpoint but not yet
    # here; every variable that exists now (weights, masks, pruning step, optimizer) must match.
    status.assert_existing_objects_matched().expect_partial()
    with np.load(os.path.join(self.directory, latest["state"]), allow_pickle=False) as state:
      self.early.load_state(json.loads(str(state["meta"])),
                            [state["w%d" % i] for i in range(int(state["n"]))])
    self.resumed_from = self.written = int(latest["epoch"])
    return self.resumed_from

  # -- save ----------------------------------------------------------------

  def on_epoch_end(self, epoch, logs=None):
    if time.monotonic() - self._last < self.interval:
      return
    self.write(epoch + 1)
    self._last = time.monotonic()

  def write(self, done: int) -> None:
    """Commits the backup of the state after ``done`` epochs."""
    directory = self.write_directory
    os.makedirs(directory, exist_ok=True)
    prefix = "ckpt-%d" % done
    # Every worker writes (checkpointing mirrored variables is collective); only the chief's
    # directory is the run directory.
    self.checkpoint.write(os.path.join(directory, prefix))
    meta, weights = self.early.state()
    state = "state-%d.npz" % done
    with rundir.atomic_path(os.path.join(directory, state)) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, meta=json.dumps(meta), n=len(weights),
                 **{"w%d" % i: w for i, w in enumerate(weights)})
    rundir.write_json(os.path.join(directory, LATEST), {
        "epoch": done, "checkpoint": prefix, "state": state, "fingerprint": self.fingerprint,
        "shape": self.shape() if self.shape is not None else None})
    self.written = done
    for old in glob.glob(os.path.join(directory, "ckpt-*")) + glob.glob(
        os.path.join(directory, "state-*")):
      if not os.path.basename(old).startswith((prefix + ".", state)):
        os.remove(old)

  def discard(self) -> None:
    """Deletes this process' backup (the stage finished)."""
    self.clear(self.write_directory)

  @staticmethod
  def clear(directory: str) -> None:
    """Deletes the backup in ``directory``, if any."""
    shutil.rmtree(directory, ignore_errors=True)


def resume(saver: "StageBackup", stage: str, jsonl: str, epochs: int):
  """Restores ``saver``'s backup if any; returns ``(epochs done, initial_epoch for fit)``."""
  done = saver.restore()
  if done:
    truncate_jsonl(jsonl, done)
    print("[%s] resuming after epoch %d from %s" % (stage, done, saver.directory))
  initial = epochs if saver.early.stopped_epoch is not None else min(done, epochs)
  return done, initial


def truncate_jsonl(path: str, epochs_done: int) -> None:
  """Keeps the per-epoch lines of the epochs a resumed run does not repeat."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get("epoch", 0) <= epochs_done]
  rundir.atomic_write(path, "".join(lines))
