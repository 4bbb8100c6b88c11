"""Teacher stage: train the large model the student will learn from.

Run it alone (it records itself in ``<workdir>/manifest.json`` like the
pipeline does)::

  kdprune-teacher --workdir=runs/demo                       # embedded digits, ~15 s
  kdprune-teacher --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Writes ``<workdir>/teacher/``: ``model.keras`` (best epoch by
``--teacher_monitor``), ``metrics.json``, ``config.json``, ``metrics.jsonl``
and TensorBoard logs under ``tb/``.
"""

import dataclasses
import json
import os
import shutil
import time

from models.spec import ModelSpec, validate_spec
from pipelines import configs, rundir, sources
from pipelines.stage import StageResult

NAME = "teacher"
LOGITS_DIR = "logits"  # <workdir>/teacher/logits/: its logits, shared by the student and QAT stages


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """Everything that decides the teacher: data, architecture, training."""

  data: configs.DataConfig = configs.DataConfig()
  model: ModelSpec = ModelSpec("cnn", width=32, depth=2)
  train: configs.TrainConfig = configs.TrainConfig(epochs=30, learning_rate=2e-3, patience=6)
  progress: str = "auto"  # presentation only: not part of the fingerprint

  def validate(self) -> None:
    """Every check that needs no model and no training; imports no TensorFlow
    unless the dataset must be prepared. The data source is checked last."""
    self.data.validate()
    validate_spec(self.model, "--teacher_model")
    self.train.validate("teacher", self.data.task)
    sources.resolve(self.data)
    sources.check_augment(self.data, self.train.augment, "--teacher_augment")

  def resolved(self) -> dict:
    return {"data": configs.resolved(self.data), "model": configs.resolved(self.model),
            "train": configs.resolved(self.train)}


def fingerprint_inputs(config: TeacherConfig) -> dict:
  """What decides the teacher's result: its resolved config and the data's identity."""
  return {"config": config.resolved(), "data_source": config.data.source_identity()}


def run(config: TeacherConfig, workdir: str) -> StageResult:
  """Trains, evaluates and saves the teacher under ``<workdir>/teacher/``."""
  # pylint: disable=g-import-not-at-top
  from models.registry import build_model
  from pipelines import backup, distribute, pruning, summaries, training
  from pipelines import data as data_lib
  from pipelines.compat import keras
  # pylint: enable=g-import-not-at-top
  config.validate()
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  bundle = data_lib.load(config.data)
  cfg = config.train
  steps = bundle.steps_per_epoch(cfg.batch_size)
  with distribute.strategy().scope(), training.precision(cfg.mixed_precision):
    model = build_model(config.model, bundle.input_shape, bundle.num_classes, name="teacher",
                        flag="--teacher_model")
    model.compile(
        optimizer=training.make_optimizer(cfg, steps),
        steps_per_execution=cfg.steps_per_execution, **training.compile_args(config.data))

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME))
  backup_dir, fp, pending = backup.locate(workdir, NAME)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)
  # Logits the old teacher left for its students are stale now.
  shutil.rmtree(os.path.join(stage_dir, LOGITS_DIR), ignore_errors=True)

  # No schedule here: every epoch counts, and the best one is restored at the end.
  early = pruning.PruningAwareEarlyStopping(
      model, final_step=0, monitor=cfg.monitor, patience=cfg.patience, min_delta=cfg.min_delta,
      step_fn=lambda: 0, stage=NAME)
  saver = backup.StageBackup(backup_dir, fp, model, model.optimizer, model.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir))
  done, initial_epoch = backup.resume(saver, NAME, jsonl, cfg.epochs)
  callbacks = [
      summaries.NonFiniteGuard(NAME, "--teacher_learning_rate"),
      early,
      summaries.tensorboard_callback(tb_dir),
      summaries.MetricsLogger(jsonl),
      saver,  # last: backs up the epoch after early stopping has judged it
  ]
  print("[teacher] %s: %d parameters; %s: %s" % (
      config.model.name, model.count_params(), bundle.name,
      ", ".join("%s %d" % kv for kv in bundle.num_examples.items())))
  start = time.time()
  history = model.fit(
      bundle.batches("train", cfg.batch_size, shuffle=True, seed=seed,
                     augment=cfg.augment),
      validation_data=bundle.batches("validation", cfg.batch_size),
      epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
      verbose=training.keras_verbosity(config.progress))
  train_seconds = time.time() - start

  # Early stopping has restored the best epoch; measure what is saved.
  saved = training.to_float32(model)  # what is measured is what is saved
  val = training.evaluate(saved, bundle.batches("validation", 256), config.data)
  test = training.evaluate(saved, bundle.batches("test", 256), config.data)
  epochs_run = done + len(history.history.get("loss", []))
  metrics = {
      **configs.split_metrics(val=val, test=test),
      "best_epoch": int(early.best_epoch) + 1,
      "epochs_run": epochs_run,
      "stopped_early": early.stopped_epoch is not None,
      "resumed_after_epoch": done or None,
      "mixed_precision": cfg.mixed_precision,
      "optimizer": type(model.optimizer).__name__,  # LossScaleOptimizer* under mixed precision
      "params": int(model.count_params()),
      "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
  }

  model_path = os.path.join(stage_dir, "model.keras")
  with rundir.atomic_path(model_path) as tmp:
    saved.save(tmp)
  summaries.write_hparams(tb_dir, trial_id="%s/teacher" % os.path.basename(
      os.path.abspath(workdir)), hparams=config.resolved(),
      metrics=summaries.final_metrics(metrics, extra=("test_loss",)))
  metrics_path = os.path.join(stage_dir, "metrics.json")
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(metrics_path, {**metrics, "data": bundle.describe()})
  rundir.write_json(config_path, config.resolved())
  print("[teacher] %s (best epoch %d of %d, %.1f s) -> %s" % (
      configs.describe_result(metrics), metrics["best_epoch"], epochs_run, train_seconds,
      model_path))
  saver.discard()
  return StageResult(
      artifacts={"model": model_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


def load_model(path: str):
  """Loads a teacher saved by :func:`run` as a tf_keras model (not compiled)."""
  from pipelines import training  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from pipelines.compat import keras  # pylint: disable=g-import-not-at-top
  return keras.models.load_model(path, compile=False)


# ----------------------------------------------------------------------------
# Entry point.


def config_from_flags() -> TeacherConfig:
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  return TeacherConfig(
      data=kflags.data_config_from_flags(),
      model=kflags.model_spec_from_flags("teacher"),
      train=kflags.train_config_from_flags("teacher"),
      progress=kflags.FLAGS.progress)


def main(argv):
  del argv
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  from pipelines import stage  # pylint: disable=g-import-not-at-top
  from pipelines import distribute  # pylint: disable=g-import-not-at-top
  config = config_from_flags()
  distribute.setup(kflags.FLAGS.strategy, config.validate)
  outcome = stage.execute(NAME, run, config, kflags.FLAGS.workdir, fingerprint_inputs(config),
                          force=kflags.FLAGS.force)
  print(json.dumps({"stage": NAME, "ran": outcome.ran, **outcome.entry.get("metrics", {})}))


def entry_point():
  from pipelines import cli  # pylint: disable=g-import-not-at-top
  cli.entry(main, "kdprune-teacher")


if __name__ == "__main__":
  entry_point()
