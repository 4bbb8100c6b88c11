"""Callbacks every training stage uses: early stopping that knows the pruning schedule, progress.

Why not ``keras.callbacks.EarlyStopping(start_from_epoch=...)``: its gate is an
epoch count fixed in advance and its ``restore_best_weights`` restores the whole
``self.model`` (the distillation trainer, teacher included). Here the gate is the
pruning step at which every layer holds its final sparsity (read from the
model's ``pruning_step``, so a resumed or shrunk run needs no epoch arithmetic),
only the student's weights are kept, and the state goes into the epoch backups
(:mod:`pipelines.train.backup`) so a resumed stage keeps its best epoch.
"""

import sys
from typing import Callable, Optional

from models.compat import keras
from pipelines.config.errors import StageError
from pipelines.prune import backend as prune_backend


def keras_verbosity(progress: str) -> int:
  """Maps ``--progress`` (auto|bar|epoch|none) to Keras' ``verbose``."""
  return {"bar": 1, "epoch": 2, "none": 0}.get(progress, 1 if sys.stdout.isatty() else 2)



def improved(value: float, best: Optional[float], higher_is_better: bool,
             min_delta: float) -> bool:
  """Whether ``value`` beats ``best`` (None: nothing yet) by more than ``min_delta``."""
  if best is None:
    return True
  return value > best + min_delta if higher_is_better else value < best - min_delta


class PruningAwareEarlyStopping(keras.callbacks.Callback):
  """Early stopping that only counts once the pruning schedule has reached its final sparsity.

  Keras' EarlyStopping restores masks and ``pruning_step`` along with the
  weights, so its "best" can be an epoch before pruning finished: the least
  sparse one. Here patience and the choice of the best epoch only consider
  epochs that end at or after ``final_step``; at the end of training the best
  such state of ``student`` is restored (:meth:`restore_best`). If no epoch reached ``final_step`` a
  :class:`StageError` is raised (schedules are checked beforehand, so this
  means training was cut short).

  Args:
    student: the pruned model whose weights are stored and restored.
    final_step: the pruning step from which every layer has its final sparsity.
    monitor: ``val_loss`` (lower is better) or ``val_accuracy`` (higher is better).
    patience: epochs at final sparsity without improvement before stopping; 0: never stop.
    min_delta: smallest change that counts as an improvement.
    step_fn: returns the current pruning step (default: read from ``student``).
  """

  def __init__(self, student, final_step: int, monitor: str = "val_loss", patience: int = 0,
               min_delta: float = 0.0, step_fn: Optional[Callable[[], int]] = None,
               stage: str = "student"):
    super().__init__()
    self.student = student
    self.final_step = int(final_step)
    self.monitor = monitor
    self.patience = int(patience)
    self.min_delta = abs(float(min_delta))
    self.step_fn = step_fn or (lambda: prune_backend.for_model(student).step(student))
    self.stage = stage
    self.higher_is_better = "acc" in monitor
    self.best = None
    self.best_epoch = None
    self.best_weights = None
    self.wait = 0
    self.stopped_epoch = None
    self.first_final_epoch = None

  def _improved(self, value) -> bool:
    return improved(value, self.best, self.higher_is_better, self.min_delta)

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    if self.step_fn() < self.final_step:
      return  # still pruning: neither patience nor "best" apply yet
    if self.first_final_epoch is None:
      self.first_final_epoch = epoch
    value = logs.get(self.monitor)
    if value is None:
      raise StageError(self.stage, "early stopping monitors %s, which training does not log "
                       "(logs: %s)" % (self.monitor, ", ".join(sorted(logs))))
    if self._improved(float(value)):
      self.best, self.best_epoch, self.wait = float(value), epoch, 0
      self.best_weights = self.student.get_weights()
      return
    self.wait += 1
    if self.patience and self.wait >= self.patience:
      self.stopped_epoch = epoch
      self.model.stop_training = True

  def state(self):
    """``(meta, best_weights)``: what a backup needs to resume (see :mod:`pipelines.backup`)."""
    meta = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
            "stopped_epoch": self.stopped_epoch, "first_final_epoch": self.first_final_epoch}
    return meta, list(self.best_weights or [])

  def load_state(self, meta, best_weights) -> None:
    self.best, self.best_epoch, self.wait = meta["best"], meta["best_epoch"], meta["wait"]
    self.stopped_epoch, self.first_final_epoch = meta["stopped_epoch"], meta["first_final_epoch"]
    self.best_weights = list(best_weights) if meta["best_epoch"] is not None else None

  def restore_best(self) -> None:
    """Puts the best epoch's weights back into ``student`` (the loop calls it once, after its
    last ``fit``: a model that changes shape between epochs is fitted in several stretches)."""
    if self.best_weights is None:
      raise StageError(self.stage, "training ended at pruning step %d, before the schedule "
                       "reached its final sparsity at step %d" % (self.step_fn(), self.final_step))
    self.student.set_weights(self.best_weights)
