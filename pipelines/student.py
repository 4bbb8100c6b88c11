"""Student stage: distillation from the trained teacher while tfmot prunes the student gradually.

  kdprune-student --workdir=runs/demo                          # after kdprune-teacher
  kdprune-student --workdir=runs/demo --distill=false --student_name=hard_labels   # the ablation
  kdprune-student --workdir=runs/demo --pruning_structure=m_by_n --student_name=two_four

Writes ``<workdir>/student/<name>/``: the stripped ``model.keras`` (best
epoch at final sparsity), ``metrics.json`` (test accuracy, per-layer and total
sparsity, nonzero parameters), ``config.json``, ``metrics.jsonl`` and
TensorBoard logs under ``tb/`` (losses, accuracy, learning rate, per-layer
sparsity, HParams). The manifest records each student as ``student/<name>``.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import time

from models.spec import ModelSpec, validate_spec
from pipelines import configs, rundir, sources
from pipelines.errors import ConfigError
from pipelines.stage import StageResult

NAME = "student"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class StudentConfig:
  """Everything that decides a student: data, architecture, training, distillation, pruning."""

  data: configs.DataConfig = configs.DataConfig()
  model: ModelSpec = ModelSpec("cnn", width=16, depth=2)
  train: configs.TrainConfig = configs.TrainConfig(epochs=30, learning_rate=2e-3, patience=5)
  distill: configs.DistillConfig = configs.DistillConfig()
  pruning: configs.PruningConfig = configs.PruningConfig()
  name: str = "default"
  progress: str = "auto"  # presentation only: not part of the fingerprint

  @property
  def stage(self) -> str:
    return "%s/%s" % (NAME, self.name)

  def validate(self) -> None:
    """Every check that needs no model and no training, including whether the
    pruning schedule can finish within the planned epochs on this data."""
    self.data.validate()
    check_name(self.name)
    validate_spec(self.model, "--student_model")
    self.train.validate("student", self.data.task)
    self.distill.validate()
    self.distill.check_task(self.data.task)
    self.distill.check_augment(self.train.augment, "--student_augment")
    self.pruning.validate()
    sources.check_augment(self.data, self.train.augment, "--student_augment")
    sizes = sources.split_sizes(self.data)
    if sizes is not None:
      per_epoch = -(-sizes["train"] // self.train.batch_size)
      steps = self.pruning.resolve_steps(per_epoch, self.train.epochs)
      if self.pruning.structure == "channels":
        from pipelines import channels  # pylint: disable=g-import-not-at-top
        channels.schedule(steps, per_epoch, self.train.epochs, self.pruning.channel_fraction,
                          self.pruning.exponent)

  def resolved(self) -> dict:
    out = {k: configs.resolved(getattr(self, k))
           for k in ("data", "model", "train", "distill", "pruning")}
    out["distill"] = self.distill.resolved_for(self.data.task)
    out["name"] = self.name
    out["pruning"]["target"] = self.pruning.target
    if self.pruning.structure != "channels":  # unused: must not force reruns
      out["pruning"].pop("channel_fraction", None)
    if self.distill.enabled:
      out["distill"]["teacher_outputs"] = self.distill.resolved_teacher_outputs(
        self.train.augment != "none")
    else:  # without a teacher these do not change the result, so they must not force reruns
      out["distill"] = {"enabled": False}
    return out


def check_name(name: str) -> None:
  """Refuses a ``--student_name`` that cannot be a folder name."""
  if not NAME_RE.match(name or ""):
    raise ConfigError("--student_name=%s must be letters, digits, '_', '.', '-'" % name)


def command(program: str, name: str) -> str:
  """``program`` as a user reruns it for student ``name`` (for messages)."""
  return program + ("" if name == "default" else " --student_name=%s" % name)


def teacher_entry(workdir: str) -> dict:
  """The manifest entry of a finished teacher in ``workdir``, or a ConfigError saying what to run."""
  return finished_entry(workdir, "teacher", "kdprune-teacher", "or pass --distill=false")


def finished_entry(workdir: str, stage: str, command: str, alternative: str = "") -> dict:
  """The manifest entry of a finished ``stage`` whose model exists, or a ConfigError naming ``command``."""
  run_dir = rundir.RunDir(workdir)
  entry = run_dir.entry(stage)
  model = (entry or {}).get("artifacts", {}).get("model", os.path.join(stage, "model.keras"))
  if not entry or entry.get("status") != "done" or not os.path.exists(run_dir.abspath(model)):
    raise ConfigError("no finished %s in %s (%s); run %s --workdir=%s first%s" % (
        stage, run_dir.workdir, model, command, workdir, (", " + alternative) if alternative else ""))
  for path, problem in run_dir.artifact_problems(stage):
    raise ConfigError("%s is unusable (%s); rerun %s --workdir=%s --force" % (
        path, problem, command, workdir))
  return entry


def check_data_matches(workdir: str, stage: str, data: configs.DataConfig, command: str) -> None:
  """Refuses, before any work, a finished ``stage`` whose model's inputs or classes differ from
  those of ``data`` (read from the stage's metrics.json and the data source; no TensorFlow)."""
  run_dir = rundir.RunDir(workdir)
  entry = run_dir.entry(stage) or {}
  path = entry.get("artifacts", {}).get("metrics")
  if not path:
    return
  with open(run_dir.abspath(path)) as f:
    seen = json.load(f).get("data") or {}
  if "input_shape" not in seen:
    return
  if seen.get("task", data.task) != data.task:  # metrics.json has said so since --task came
    raise ConfigError("the %s in %s was trained for --task=%s, not --task=%s; rerun %s --force "
                      "with --task=%s, or pass --task=%s" % (
                          stage, run_dir.stage_dir(stage), seen["task"], data.task, command,
                          data.task, seen["task"]))
  source = sources.resolve(data)
  trained = (tuple(seen["input_shape"]), int(seen["num_classes"]))
  if trained != (tuple(source.input_shape), int(source.num_classes)):
    raise ConfigError("the %s in %s was trained on %s inputs %s with %d classes, but --dataset=%s "
                      "gives %s with %d classes; rerun %s --force on this data, or pass the "
                      "--dataset it was trained on" % (
                          stage, run_dir.stage_dir(stage), seen.get("name", "?"), trained[0],
                          trained[1], data.dataset, tuple(source.input_shape), source.num_classes,
                          command))


def teacher_logits_path(workdir: str, data: configs.DataConfig) -> str:
  """Where the finished teacher's logits over ``data``'s training split are kept between stages.

  Keyed by the teacher run and the data config (which decides the split and
  its order); the teacher stage clears the folder when it trains again.
  """
  entry = teacher_entry(workdir)
  key = rundir.fingerprint({"teacher": entry.get("fingerprint"), "finished": entry.get("finished"),
                            "data": configs.resolved(data)})[:16]
  from pipelines import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  return os.path.join(rundir.RunDir(workdir).stage_dir(teacher_lib.NAME), teacher_lib.LOGITS_DIR,
                      key + ".npy")


def teacher_for_training(workdir: str, bundle, data: configs.DataConfig,
                         distill_config: configs.DistillConfig, train_config: configs.TrainConfig):
  """The teacher a distillation stage needs (None without distillation).

  A teacher that runs in the training step (online outputs) is built under the
  distribution strategy; one that only fills the cache runs locally on each worker.
  """
  from pipelines import distribute  # pylint: disable=g-import-not-at-top
  if not distill_config.enabled:
    return None
  online = distill_config.resolved_teacher_outputs(train_config.augment != "none") == "online"
  with (distribute.strategy().scope() if online else contextlib.nullcontext()):
    return load_teacher(workdir, bundle, data.dataset)


def load_teacher(workdir: str, bundle, dataset: str):
  """The finished teacher of ``workdir``, checked against the data it will guide the student on."""
  from pipelines import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  teacher_entry(workdir)
  path = os.path.join(workdir, "teacher", "model.keras")
  teacher = teacher_lib.load_model(path)
  if tuple(teacher.input_shape[1:]) != bundle.input_shape or \
      tuple(teacher.output_shape[1:]) != (bundle.num_classes,):
    raise ConfigError("the teacher in %s takes %s and predicts %s classes, but --dataset=%s "
                      "gives %s and %d classes; retrain the teacher on this data" % (
                          path, tuple(teacher.input_shape[1:]), teacher.output_shape[-1],
                          dataset, bundle.input_shape, bundle.num_classes))
  return teacher


def fingerprint_inputs(config: StudentConfig, workdir: str) -> dict:
  """The student's config, its data, and which teacher run it learns from."""
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  if config.distill.enabled:
    entry = teacher_entry(workdir)
    check_data_matches(workdir, "teacher", config.data, "kdprune-teacher")
    inputs["teacher"] = {"fingerprint": entry.get("fingerprint"), "finished": entry.get("finished")}
  return inputs


def run(config: StudentConfig, workdir: str) -> StageResult:
  """Distils and prunes the student; saves it stripped under ``<workdir>/student/<name>/``."""
  # pylint: disable=g-import-not-at-top
  from pipelines.compat import keras  # first: TensorFlow is imported through compat
  import tensorflow_model_optimization as tfmot
  from models.registry import build_model
  from pipelines import data as data_lib
  from pipelines import backup, distill, distribute, dynamic, pruning, summaries, training
  # pylint: enable=g-import-not-at-top
  config.validate()
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  bundle = data_lib.load(config.data)

  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  steps = config.pruning.resolve_steps(steps_per_epoch, cfg.epochs)
  teacher = teacher_for_training(workdir, bundle, config.data, config.distill, cfg)
  train_ds, mode, cache_seconds = distill.training_batches(
      bundle, teacher, config.distill, cfg, seed,
      cache_path=teacher_logits_path(workdir, config.data) if teacher is not None else None)
  shrunk = None  # whole units removed first: pipelines/channel_training.py
  if config.pruning.structure == "channels":
    from pipelines import channel_training  # pylint: disable=g-import-not-at-top
    if not config.pruning.final_sparsity:
      return channel_training.run(config, workdir, bundle, teacher, train_ds, mode, cache_seconds)
    # Shrink, then sparsify: tfmot prunes the shrunk student over another --student_epochs.
    shrink_logs = rundir.fresh_stage_logs(distribute.output_dir(
        os.path.join(workdir, NAME, config.name, "shrink")))
    shrunk = channel_training.shrink_phase(config, bundle, teacher, train_ds, mode, *shrink_logs)

  with distribute.strategy().scope(), training.precision(cfg.mixed_precision):
    student = shrunk["model"] if shrunk else build_model(
        config.model, bundle.input_shape, bundle.num_classes, name="student",
        flag="--student_model")
    if teacher is not None and student.count_params() > teacher.count_params():
      print("[%s] warning: the student (%d parameters) is larger than its teacher (%d); check "
            "--student_model/--student_width" % (config.stage, student.count_params(),
                                                   teacher.count_params()))
    pruned, plan = pruning.apply_pruning(student, config.pruning, steps)
    revision = None
    if config.pruning.method == "dynamic":
      revision = dynamic.MaskRevision(pruned, steps["begin_step"], steps["mask_update_end"],
                                      steps["mask_update_every"], config.pruning.drop_fraction)
    trainer = distill.DistillationTrainer(
        pruned, teacher=teacher if mode == "online" else None,
        temperature=config.distill.temperature, alpha=config.distill.alpha,
        distill=config.distill.enabled, mask_revision=revision, task=config.data.task,
        regression_loss=config.data.regression_loss)
    trainer.compile(optimizer=training.make_optimizer(cfg, steps_per_epoch),
                    steps_per_execution=cfg.steps_per_execution)

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME, config.name))
  backup_dir, fp, pending = backup.locate(workdir, config.stage)
  if shrunk:  # the shrink phase ran again: a backup of the last run's model must not be resumed
    pending = None
    shutil.rmtree(distribute.output_dir(backup_dir), ignore_errors=True)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)

  early = pruning.PruningAwareEarlyStopping(
      pruned, steps["final_step"], monitor=cfg.monitor, patience=cfg.patience,
      min_delta=cfg.min_delta, stage=config.stage)
  # The student (not the trainer, which also holds the teacher) and the optimizer.
  saver = backup.StageBackup(backup_dir, fp, pruned, trainer.optimizer, pruned.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir),
                             extra=revision)
  done, initial_epoch = backup.resume(saver, config.stage, jsonl, cfg.epochs)
  callbacks = [
      tfmot.sparsity.keras.UpdatePruningStep(),
      summaries.NonFiniteGuard(config.stage, "--student_learning_rate"),
      tfmot.sparsity.keras.PruningSummaries(log_dir=tb_dir, update_freq="epoch",
                                            profile_batch=0, write_graph=False),
      *([dynamic.RevisionSummaries(revision, os.path.join(tb_dir, "train"))]
        if revision is not None else []),
      summaries.MetricsLogger(jsonl),
      early,
      saver,  # last: backs up the epoch after early stopping has judged it
  ]
  pruned_names = [n for n, why in plan.items() if why == "prune"]
  targets = {n: config.pruning.target_for(n) for n in pruned_names}
  own = ", ".join("%s %.2f" % kv for kv in config.pruning.layer_sparsity)
  print("[%s] %s: %d parameters; pruning %d layers to %.2f%s %s (steps %d-%d every %d of %d); "
        "teacher outputs: %s" % (
            config.stage, config.model.name, student.count_params(), len(pruned_names),
            config.pruning.target, " (%s)" % own if own else "", config.pruning.structure,
            steps["begin_step"], steps["end_step"], steps["frequency"], steps["planned_steps"],
            mode))
  if revision is not None:
    print("[%s] dynamic pruning: masks revised every %d steps until step %d (drop fraction %.2f "
          "decaying to 0)" % (config.stage, steps["mask_update_every"], steps["mask_update_end"],
                              config.pruning.drop_fraction))
  for layer, why in plan.items():
    if why != "prune" and why != "no prunable weights":
      print("[%s] %s: %s" % (config.stage, layer, why))
  fit_start = time.time()
  history = trainer.fit(train_ds, validation_data=bundle.batches("validation", cfg.batch_size),
                        epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                        verbose=training.keras_verbosity(config.progress))
  train_seconds = time.time() - fit_start
  epochs_run = done + len(history.history.get("loss", []))

  stripped = training.to_float32(pruning.strip(pruned))  # what is measured is what is saved
  report = pruning.sparsity_report(
      stripped, plan, config.pruning.m_by_n if config.pruning.structure == "m_by_n" else None,
      targets=targets)
  val = training.evaluate(stripped, bundle.batches("validation", 256), config.data)
  test = training.evaluate(stripped, bundle.batches("test", 256), config.data)
  metrics = {
      **configs.split_metrics(val=val, test=test),
      "sparsity": report["sparsity"], "target_sparsity": report["target"],
      "model_sparsity": report["model_sparsity"], "params": report["params"],
      "nonzero_params": report["nonzero_params"],
      "best_epoch": (early.best_epoch + 1) if early.best_epoch is not None else None,
      "first_final_sparsity_epoch": (early.first_final_epoch + 1
                                     if early.first_final_epoch is not None else None),
      "epochs_run": epochs_run, "stopped_early": early.stopped_epoch is not None,
      "teacher_outputs": mode, "distill": config.distill.enabled,
      "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
      "resumed_after_epoch": done or None,
      "mixed_precision": cfg.mixed_precision,
      "optimizer": type(trainer.optimizer).__name__,  # LossScaleOptimizer* under mixed precision
      "pruning_method": config.pruning.method,
  }
  if revision is not None:
    metrics.update(revision.report())
  if shrunk:
    metrics["channels"] = channel_training.summary(shrunk, stripped,
                                                   config.pruning.channel_fraction)
  model_path, metrics_path, config_path = write_outputs(
      config, workdir, stage_dir, tb_dir, stripped, metrics,
      {"pruning": {"steps": steps, "plan": plan, "layers": report["layers"]},
       "data": bundle.describe()},
      {"final/sparsity": metrics["sparsity"],
       "final/nonzero_params": float(metrics["nonzero_params"])},
      check=lambda: pruning.check_sparsity(
          report, report["target"], config.stage,
          config.pruning.m_by_n if config.pruning.structure == "m_by_n" else None))
  print("[%s] %s at sparsity %.4f (%d of %d parameters nonzero; best epoch %s of "
        "%d, %.1f s) -> %s" % (config.stage, configs.describe_result(metrics), metrics["sparsity"],
                               metrics["nonzero_params"], metrics["params"], metrics["best_epoch"],
                               epochs_run, train_seconds, model_path))
  saver.discard()
  return StageResult(
      artifacts={"model": model_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


def write_outputs(config: StudentConfig, workdir: str, stage_dir: str, tb_dir: str, model,
                  metrics: dict, details: dict, final: dict, check=None):
  """Writes a trained student: ``metrics.json`` (``metrics`` + ``details``), then ``check()``
  (which may fail the stage), ``model.keras``, ``config.json`` and the HParams session (test and
  validation accuracy + ``final``). Returns ``(model_path, metrics_path, config_path)``."""
  metrics_path = os.path.join(stage_dir, "metrics.json")
  rundir.write_json(metrics_path, {**metrics, **details})
  if check is not None:
    check()
  model_path = os.path.join(stage_dir, "model.keras")
  with rundir.atomic_path(model_path) as tmp:
    model.save(tmp)
  config_path = os.path.join(stage_dir, "config.json")
  rundir.write_json(config_path, config.resolved())
  from pipelines import summaries  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  summaries.write_hparams(
      tb_dir, trial_id="%s/%s" % (os.path.basename(os.path.abspath(workdir)), config.stage),
      hparams=config.resolved(), metrics={**summaries.final_metrics(metrics), **final})
  return model_path, metrics_path, config_path


def load_model(path: str):
  """Loads a stripped student saved by :func:`run` (a plain tf_keras model)."""
  from pipelines import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  return teacher_lib.load_model(path)


# ----------------------------------------------------------------------------
# Entry point.


def config_from_flags() -> StudentConfig:
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  return kflags.student_config_from_flags()


def main(argv):
  del argv
  from pipelines import stage  # pylint: disable=g-import-not-at-top
  config = config_from_flags()
  stage.main_from_flags(config, run, fingerprint_inputs)


def entry_point():
  from pipelines import cli  # pylint: disable=g-import-not-at-top
  cli.entry(main, "kdprune-student")


if __name__ == "__main__":
  entry_point()
