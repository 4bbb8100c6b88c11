"""The one training loop: every stage that trains (the teacher, the student, QAT, the channel
phases) runs its epochs here.

A stage supplies only what differs, as a :class:`Phase`: the model whose weights train (and are
backed up, and restored at the best epoch), what ``fit`` runs (the model itself, or the
distillation trainer around it), when early stopping may start counting (the pruning step at
which every layer holds its final sparsity), its own callbacks, and, for a student that loses
units between epochs, how to rebuild it. :func:`train` does the rest, alike for every stage:

* the epoch backups and the resume after a kill (:mod:`pipelines.train.backup`), for every
  phase, including the channel phases whose model changes shape (the backup records the shape);
* pruning-aware early stopping and the restore of the best epoch
  (:class:`pipelines.train.callbacks.PruningAwareEarlyStopping`);
* the non-finite-loss guard, TensorBoard, ``metrics.jsonl``;
* the timing of the fit and the figures every stage reports (:meth:`Trained.metrics`).

:func:`start` (seed and data), :func:`evaluate_splits` and :func:`write_outputs` are the steps
around it that every training stage shares.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from models import keras3 as keras3_models
from models.compat import keras
from pipelines.config import tasks
from pipelines.data import bundle as data_lib
from pipelines.runtime import distribute, rundir, timing
from pipelines.train import backup, callbacks, evaluation, summaries


@dataclasses.dataclass
class Phase:
  """What a stage trains, for :func:`train`.

  Attributes:
    model: the model whose weights train, are backed up and come back at the best epoch (the
      teacher, the pruned student, the QAT model; never the distillation trainer, which also
      holds the teacher).
    trainer: what ``fit`` runs: ``model`` itself or a :class:`~pipelines.train.distill.
      DistillationTrainer` around it (compiled, its optimizer's slots built or buildable).
    final_step: early stopping counts the epochs that end after this step (0: every epoch).
    step_fn: the current step compared with ``final_step`` (default: the optimizer's step).
    callbacks: ``callbacks(tb_dir)``: the stage's own callbacks, run before the common ones
      (made once the loop has cleared the stage's old logs from ``tb_dir``).
    tensorboard: add Keras' TensorBoard callback (False where a stage callback writes it).
    extra: further trackable state the backups keep (dynamic pruning's counters), or None.
    rebuild: for a model that changes between epochs: ``rebuild(epoch_number, phase) -> Phase``
      after each epoch in ``rebuild_after``; the new phase trains on.
    rebuild_after: the epoch numbers (1-based) after which ``rebuild`` runs.
    shape: ``shape(phase) -> dict``: what the backups record to rebuild the model's shape.
    reshape: ``reshape(recorded) -> Phase``: a phase whose model has the recorded shape, for the
      resume.
  """

  model: Any
  trainer: Any
  final_step: int = 0
  step_fn: Optional[Callable[[], int]] = None
  callbacks: Callable[[str], Sequence[Any]] = lambda tb_dir: ()
  tensorboard: bool = True
  extra: Any = None
  rebuild: Optional[Callable[[int, "Phase"], "Phase"]] = None
  rebuild_after: Sequence[int] = ()
  shape: Optional[Callable[["Phase"], dict]] = None
  reshape: Optional[Callable[[dict], "Phase"]] = None


@dataclasses.dataclass
class Trained:
  """What :func:`train` did: the phase it ended with (its model restored to the best epoch), the
  early stopping, the epochs, the time, and where the logs and the backup are."""

  phase: Phase
  early: callbacks.PruningAwareEarlyStopping
  history: Dict[str, List[float]]
  done: int  # epochs a resumed run did not repeat
  epochs_run: int
  train_seconds: float
  tb_dir: str
  jsonl: str
  saver: backup.StageBackup

  @property
  def model(self):
    return self.phase.model

  def metrics(self, train_config) -> dict:
    """The figures every training stage reports in ``metrics.json``."""
    early = self.early
    return {
        "best_epoch": (early.best_epoch + 1) if early.best_epoch is not None else None,
        "epochs_run": self.epochs_run,
        "stopped_early": early.stopped_epoch is not None,
        "resumed_after_epoch": self.done or None,
        "mixed_precision": train_config.mixed_precision,
        # LossScaleOptimizer* under mixed precision
        "optimizer": type(self.phase.trainer.optimizer).__name__,
        "train_seconds": round(self.train_seconds, 2),
        "seconds_per_epoch": round(self.train_seconds / max(1, self.epochs_run - self.done), 3),
    }

  def last(self, key: str) -> Optional[float]:
    """The last epoch's logged ``key`` (None when it was not logged)."""
    values = self.history.get(key)
    return float(values[-1]) if values else None


def start(config):
  """A training stage's first steps: the seed (initialisation and order) and the data.

  Returns ``(seed, bundle)``."""
  timing.lap("startup")
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  bundle = data_lib.load(config.data)
  timing.lap("data")
  return seed, bundle


def train(config, workdir: str, phase: Phase, train_ds, val_ds, lr_flag: str,
          folder: Optional[str] = None, fresh: bool = False,
          backup_last: bool = False) -> Trained:
  """Runs ``config.train.epochs`` epochs of ``phase`` with resume and pruning-aware early
  stopping; logs under ``<workdir>/<folder>/`` (default: the stage's folder).

  ``fresh``: a backup left there is not resumed (its upstream phase trained anew). The backup is
  kept until the stage calls ``trained.saver.discard()`` (a later phase of the same stage may
  still fail, and a rerun then resumes this phase at its end: ``backup_last`` backs up the last
  epoch whatever ``KDPRUNE_BACKUP_SECONDS`` says, so that resume has nothing to train again).
  """
  cfg = config.train
  folder = folder or config.stage
  shared = rundir.RunDir(workdir).stage_dir(folder)
  stage_dir = distribute.output_dir(shared)  # a non-chief worker writes to a private folder
  backup_dir = os.path.join(shared, "backup")
  fp = (rundir.RunDir(workdir).entry(config.stage) or {}).get("fingerprint")
  pending = None if fresh else backup.latest(backup_dir, fp)
  if fresh:
    backup.StageBackup.clear(distribute.output_dir(backup_dir))
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)
  if pending is not None and pending.get("shape") is not None and phase.reshape is not None:
    phase = phase.reshape(pending["shape"])

  early = callbacks.PruningAwareEarlyStopping(
      phase.model, phase.final_step, monitor=cfg.monitor, patience=cfg.patience,
      min_delta=cfg.min_delta, step_fn=_step_fn(phase), stage=config.stage)
  own = list(phase.callbacks(tb_dir))
  common = [summaries.NonFiniteGuard(config.stage, lr_flag),
            *([summaries.tensorboard_callback(tb_dir)] if phase.tensorboard else []),
            summaries.MetricsLogger(jsonl), early]

  def saver_for(p: Phase) -> backup.StageBackup:
    return backup.StageBackup(
        backup_dir, fp, p.model, p.trainer.optimizer, p.model.trainable_variables, early,
        write_directory=distribute.output_dir(backup_dir), extra=p.extra,
        shape=(lambda: p.shape(p)) if p.shape is not None else None)

  saver = saver_for(phase)
  done, initial_epoch = backup.resume(saver, config.stage, jsonl, cfg.epochs)
  if done and done in phase.rebuild_after:  # the backup holds the model before this rebuild
    phase = _rebuild(phase, done, early)
    saver = saver_for(phase)
  history: Dict[str, List[float]] = {}
  verbose = callbacks.keras_verbosity(config.progress)
  began = time.time()
  epoch = initial_epoch
  while epoch < cfg.epochs and early.stopped_epoch is None:
    # One fit per stretch between rebuilds; the saver goes last, after early stopping judged.
    until = min([e for e in phase.rebuild_after if e > epoch] + [cfg.epochs])
    fitted = phase.trainer.fit(train_ds, validation_data=val_ds, initial_epoch=epoch,
                               epochs=until, verbose=verbose,
                               callbacks=[*own, *common, saver], **_fit_options(phase.trainer))
    for key, values in fitted.history.items():
      history.setdefault(key, []).extend(values)
    epoch = until
    if until in phase.rebuild_after and until < cfg.epochs and early.stopped_epoch is None:
      phase = _rebuild(phase, until, early)
      saver = saver_for(phase)
  train_seconds = time.time() - began
  epochs_run = done + len(history.get("loss", []))
  if backup_last and saver.written != epochs_run:
    saver.write(epochs_run)
  early.restore_best()
  timing.lap("training")
  return Trained(phase=phase, early=early, history=history, done=done,
                 epochs_run=epochs_run, train_seconds=train_seconds,
                 tb_dir=tb_dir, jsonl=jsonl, saver=saver)


def _fit_options(trainer) -> dict:
  """What ``fit`` needs beyond the common arguments: for a Keras 3 trainer (a Keras 3 student),
  ``shuffle=False`` (the batches come shuffled; Keras 3 warns otherwise). Keras 3's ``fit`` takes
  the loop's tf_keras callbacks as they are: its ``CallbackList`` calls ``set_model``,
  ``set_params`` and the ``on_*`` hooks of whatever it is given."""
  return {"shuffle": False} if keras3_models.is_keras3(getattr(trainer, "student", trainer)) \
      else {}


def _step_fn(phase: Phase) -> Callable[[], int]:
  if phase.step_fn is not None:
    return phase.step_fn
  if not phase.final_step:
    return lambda: 0
  return lambda: int(phase.trainer.optimizer.iterations.numpy())


def _rebuild(phase: Phase, number: int, early) -> Phase:
  new = phase.rebuild(number, phase)
  early.student = new.model
  if new.step_fn is None and phase.step_fn is None and phase.final_step:
    early.step_fn = _step_fn(new)
  return new


def evaluate_splits(model, bundle, data_config) -> dict:
  """``{"val_<figure>", "test_<figure>"}``: ``model`` measured on the validation and test
  splits (what is measured is what is saved)."""
  val = evaluation.evaluate(model, bundle.batches("validation", 256), data_config)
  test = evaluation.evaluate(model, bundle.batches("test", 256), data_config)
  timing.lap("evaluation")
  return tasks.split_metrics(val=val, test=test)


def write_outputs(config, workdir: str, stage_dir: str, tb_dir: str, metrics: dict,
                  details: dict, save: Callable[[], Dict[str, str]],
                  final: Optional[dict] = None, check: Optional[Callable[[], None]] = None,
                  final_extra: Sequence[str] = ()) -> Dict[str, str]:
  """Writes a trained stage's outputs: ``metrics.json`` (``metrics`` + ``details``), then
  ``check()`` (which may fail the stage, with the figures written), then ``save()`` (the model
  files: returns their artifacts), ``config.json`` and the HParams session (the test and
  validation figures, ``final_extra`` of ``metrics``, and ``final``).

  Returns the artifacts: ``save()``'s plus ``metrics`` and ``config``."""
  metrics_path = os.path.join(stage_dir, "metrics.json")
  rundir.write_json(metrics_path, {**metrics, **details})
  if check is not None:
    check()
  artifacts = dict(save())
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(config_path, config.resolved())
  summaries.write_hparams(
      tb_dir, trial_id="%s/%s" % (os.path.basename(os.path.abspath(workdir)), config.stage),
      hparams=config.resolved(),
      metrics={**summaries.final_metrics(metrics, extra=final_extra), **(final or {})})
  return {**artifacts, "metrics": metrics_path, "config": config_path}


def save_keras(model, stage_dir: str) -> Dict[str, str]:
  """``model.keras`` in ``stage_dir``, written atomically; its artifact."""
  path = os.path.join(stage_dir, "model.keras")
  with rundir.atomic_path(path) as tmp:
    model.save(tmp)
  return {"model": path}
