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

import os
import shutil
import time

from pipelines.config import STUDENT as NAME
from pipelines.config import TEACHER, StudentConfig, check_name, tasks  # noqa: F401
from pipelines.data import sources
from models.spec import kernel_layers
from pipelines.prune import channels  # no TensorFlow at import
from pipelines.prune import plan as prune_plan  # no TensorFlow at import
from pipelines.runtime import progress, rundir, timing, upstream
from pipelines.runtime.execute import Stage, StageResult

__all__ = ["NAME", "STAGE", "StudentConfig", "validate", "fingerprint_inputs", "run"]


def validate(config: StudentConfig) -> None:
  """Every check that needs no model and no training, including whether the pruning schedule
  can finish within the planned epochs on this data."""
  config.validate()
  sources.check_augment(config.data, config.train.augment, "--student_augment")
  if config.pruning.structure != "channels":  # channels: the layers shrink before tfmot sees them
    source = sources.resolve(config.data)
    layers = kernel_layers(config.model, source.input_shape, source.num_classes)
    if layers is not None:  # a built-in family: refuse "nothing would be pruned" before any work
      prune_plan.plan(layers, config.pruning)
  sizes = sources.split_sizes(config.data)
  if sizes is not None:
    per_epoch = -(-sizes["train"] // config.train.batch_size)
    steps = config.pruning.resolve_steps(per_epoch, config.train.epochs)
    if config.pruning.structure == "channels":
      channels.schedule(steps, per_epoch, config.train.epochs, config.pruning.channel_fraction,
                        config.pruning.exponent)


def check_upstream(config: StudentConfig, workdir: str) -> None:
  """The finished teacher it learns from (read from the manifest only: no data, no TensorFlow)."""
  if config.distill.enabled:
    upstream.teacher_entry(workdir)


def fingerprint_inputs(config: StudentConfig, workdir: str) -> dict:
  """The student's config, its data, and which teacher run it learns from."""
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  if config.distill.enabled:
    inputs["teacher"] = upstream.teacher_inputs(workdir, config.data)
  if config.weights is not None:  # a changed file reruns the student
    from pipelines.train import teacher_import  # pylint: disable=g-import-not-at-top
    inputs["weights_file"] = teacher_import.content_hash(config.weights)
  return inputs


def run(config: StudentConfig, workdir: str) -> StageResult:
  """Distils and prunes the student; saves it stripped under ``<workdir>/student/<name>/``."""
  # TensorFlow is imported here, not at the top: flags are checked before it loads.
  # pylint: disable=g-import-not-at-top
  from models.compat import keras  # first: TensorFlow is imported through compat
  from pipelines.data import bundle as data_lib
  from pipelines.prune import dynamic
  from pipelines.prune import magnitude as pruning
  from pipelines.runtime import distribute
  from pipelines.train import (backup, callbacks, channel_loop, distill, evaluation, optimizers,
                               precision, summaries)
  # pylint: enable=g-import-not-at-top
  validate(config)
  timing.lap("startup")
  seed = config.train.seed_or(config.data.seed)
  keras.utils.set_random_seed(seed)
  bundle = data_lib.load(config.data)
  timing.lap("data")

  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  steps = config.pruning.resolve_steps(steps_per_epoch, cfg.epochs)
  if config.pruning.structure == "channels":
    channel_loop.check_plan(config, bundle)  # before the teacher's outputs are computed
  teacher = distill.teacher_for_training(workdir, bundle, config.data, config.distill, cfg)
  timing.lap("build")
  train_ds, mode, cache_seconds = distill.training_batches(
      bundle, teacher, config.distill, cfg, seed,
      cache_path=upstream.teacher_logits_path(workdir, config.data) if teacher is not None else None)
  timing.lap("teacher_outputs")
  shrunk = None  # whole units removed first: pipelines/train/channel_loop.py
  if config.pruning.structure == "channels":
    if not config.pruning.final_sparsity:
      return _run_channels(config, workdir, bundle, teacher, train_ds, mode, cache_seconds)
    # Shrink, then sparsify: tfmot prunes the shrunk student over another --student_epochs.
    shrink_logs = rundir.fresh_stage_logs(distribute.output_dir(
        os.path.join(workdir, NAME, config.name, "shrink")))
    shrunk = channel_loop.shrink_phase(config, bundle, teacher, train_ds, mode, *shrink_logs)

  with distribute.strategy().scope(), precision.precision(cfg.mixed_precision):
    student = shrunk["model"] if shrunk else distill.build_student(config, bundle)
    if teacher is not None and 0 < teacher.count_params() < student.count_params():
      progress.warn("[%s] warning: the student (%d parameters) is larger than its teacher (%d); check "
            "--student_model/--student_width" % (config.stage, student.count_params(),
                                                   teacher.count_params()))
    pruned, plan = pruning.apply_pruning(student, config.pruning, steps)
    revision = None
    if config.pruning.method == "dynamic":
      # The revisions own the mask after tfmot's schedule has reached its final sparsity.
      revision = dynamic.MaskRevision(pruned, steps["mask_update_begin"], steps["mask_update_end"],
                                      steps["mask_update_every"], config.pruning.drop_fraction)
    trainer = distill.DistillationTrainer(
        pruned, teacher=teacher if mode == "online" else None,
        temperature=config.distill.temperature, alpha=config.distill.alpha,
        distill=config.distill.enabled, mask_revision=revision, task=config.data.task,
        regression_loss=config.data.regression_loss)
    trainer.compile(optimizer=optimizers.make_optimizer(cfg, steps_per_epoch),
                    steps_per_execution=cfg.steps_per_execution)
  timing.lap("build")

  # Non-chief workers of a multi-worker run write to a private directory.
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME, config.name))
  backup_dir, fp, pending = backup.locate(workdir, config.stage)
  if shrunk:  # the shrink phase ran again: a backup of the last run's model must not be resumed
    pending = None
    shutil.rmtree(distribute.output_dir(backup_dir), ignore_errors=True)
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir, keep=pending is not None)

  early = callbacks.PruningAwareEarlyStopping(
      pruned, steps["final_step"], monitor=cfg.monitor, patience=cfg.patience,
      min_delta=cfg.min_delta, stage=config.stage)
  # The student (not the trainer, which also holds the teacher) and the optimizer.
  saver = backup.StageBackup(backup_dir, fp, pruned, trainer.optimizer, pruned.trainable_variables,
                             early, write_directory=distribute.output_dir(backup_dir),
                             extra=revision)
  done, initial_epoch = backup.resume(saver, config.stage, jsonl, cfg.epochs)
  step_callback, summary_callback = pruning.training_callbacks(tb_dir)
  fit_callbacks = [
      step_callback,
      summaries.NonFiniteGuard(config.stage, "--student_learning_rate"),
      summary_callback,
      *([dynamic.RevisionSummaries(revision, os.path.join(tb_dir, "train"))]
        if revision is not None else []),
      *([pruning.MByNSummary(pruned, steps, os.path.join(tb_dir, "train"))]
        if config.pruning.structure == "m_by_n" else []),
      summaries.MetricsLogger(jsonl),
      early,
      saver,  # last: backs up the epoch after early stopping has judged it
  ]
  pruned_names = [n for n, why in plan.items() if why == "prune"]
  targets = {n: config.pruning.target_for(n) for n in pruned_names}
  own = ", ".join("%s %.2f" % kv for kv in config.pruning.layer_sparsity)
  progress.say("[%s] %s: %d parameters; pruning %d layers to %.2f%s %s (steps %d-%d every %d of %d); "
        "teacher outputs: %s" % (
            config.stage, config.model.name, student.count_params(), len(pruned_names),
            config.pruning.target, " (%s)" % own if own else "", config.pruning.structure,
            steps["begin_step"], steps["end_step"], steps["frequency"], steps["planned_steps"],
            mode))
  if revision is not None:
    progress.say("[%s] dynamic pruning: at the final sparsity, masks revised every %d steps from "
          "step %d until step %d (drop fraction %.2f decaying to 0)" % (
              config.stage, steps["mask_update_every"], steps["mask_update_begin"],
              steps["mask_update_end"], config.pruning.drop_fraction))
  for layer, why in plan.items():
    if why != "prune" and why != "no prunable weights":
      progress.say("[%s] %s: %s" % (config.stage, layer, why))
  fit_start = time.time()
  history = trainer.fit(train_ds, validation_data=bundle.batches("validation", cfg.batch_size),
                        epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=fit_callbacks,
                        verbose=callbacks.keras_verbosity(config.progress))
  train_seconds = time.time() - fit_start
  epochs_run = done + len(history.history.get("loss", []))
  timing.lap("training")

  stripped = precision.to_float32(pruning.strip(pruned))  # what is measured is what is saved
  report = pruning.sparsity_report(
      stripped, plan, config.pruning.m_by_n if config.pruning.structure == "m_by_n" else None,
      targets=targets)
  val = evaluation.evaluate(stripped, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(stripped, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "sparsity": report["sparsity"], "target_sparsity": report["target"],
      "model_sparsity": report["model_sparsity"], "params": report["params"],
      "nonzero_params": report["nonzero_params"],
      "best_epoch": (early.best_epoch + 1) if early.best_epoch is not None else None,
      "first_final_sparsity_epoch": (early.first_final_epoch + 1
                                     if early.first_final_epoch is not None else None),
      "epochs_run": epochs_run, "stopped_early": early.stopped_epoch is not None,
      "teacher_outputs": mode, "distill": config.distill.enabled,
      **distill.agreement_metrics(history),
      "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run - done), 3),
      "resumed_after_epoch": done or None,
      "mixed_precision": cfg.mixed_precision,
      "optimizer": type(trainer.optimizer).__name__,  # LossScaleOptimizer* under mixed precision
      "pruning_method": config.pruning.method,
  }
  if config.pruning.structure == "m_by_n":
    metrics["m_by_n_applied_step"] = pruning.m_by_n_applied_step(pruned, steps)
  if revision is not None:
    metrics.update(revision.report())
  if shrunk:
    metrics["channels"] = channel_loop.summary(shrunk, stripped,
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
  progress.say("[%s] %s at sparsity %.4f (%d of %d parameters nonzero; best epoch %s of "
        "%d, %.1f s) -> %s" % (config.stage, tasks.describe_result(metrics), metrics["sparsity"],
                               metrics["nonzero_params"], metrics["params"], metrics["best_epoch"],
                               epochs_run, train_seconds, model_path))
  saver.discard()
  timing.lap("saving")
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
  from pipelines.train import summaries  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  summaries.write_hparams(
      tb_dir, trial_id="%s/%s" % (os.path.basename(os.path.abspath(workdir)), config.stage),
      hparams=config.resolved(), metrics={**summaries.final_metrics(metrics), **final})
  return model_path, metrics_path, config_path


def _run_channels(config: StudentConfig, workdir: str, bundle, teacher, train_ds, mode: str,
                  cache_seconds: float) -> StageResult:
  """Trains and shrinks the student; saves the smaller Functional model like any student."""
  # pylint: disable=g-import-not-at-top
  from pipelines.prune import magnitude as pruning
  from pipelines.runtime import distribute
  from pipelines.train import channel_loop, evaluation, precision
  # pylint: enable=g-import-not-at-top
  cfg = config.train
  steps = config.pruning.resolve_steps(bundle.steps_per_epoch(cfg.batch_size), cfg.epochs)
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME, config.name))
  tb_dir, jsonl = rundir.fresh_stage_logs(stage_dir)
  phase = channel_loop.shrink_phase(config, bundle, teacher, train_ds, mode, tb_dir, jsonl)
  timing.lap("training")
  student, chains, kept, original = (phase[k] for k in ("model", "chains", "kept", "original"))
  params_before, best_epoch, epochs_run = (phase[k] for k in ("params_before", "best_epoch",
                                                             "epochs_run"))
  train_seconds = phase["train_seconds"]
  final = precision.to_float32(student)
  after = channels.units(final, chains)
  not_pruned = {name: why for name, why in kept.items()}
  not_pruned.update({name: "channels: %d of %d units kept" % (after[name], original[name])
                     for name in chains})
  report = pruning.sparsity_report(final, not_pruned)
  val = evaluation.evaluate(final, bundle.batches("validation", 256), config.data)
  test = evaluation.evaluate(final, bundle.batches("test", 256), config.data)
  timing.lap("evaluation")
  metrics = {
      **tasks.split_metrics(val=val, test=test),
      "sparsity": report["sparsity"], "target_sparsity": 0.0,
      "model_sparsity": report["model_sparsity"], "params": report["params"],
      "params_before_channels": params_before, "nonzero_params": report["nonzero_params"],
      "best_epoch": best_epoch, "first_final_sparsity_epoch": phase["last_rebuild"] + 1,
      "epochs_run": epochs_run, "stopped_early": phase["stopped"] is not None,
      "teacher_outputs": mode, "distill": config.distill.enabled,
      "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
      "seconds_per_epoch": round(train_seconds / max(1, epochs_run), 3),
      "resumed_after_epoch": None, "mixed_precision": cfg.mixed_precision,
      "optimizer": phase["optimizer"], "pruning_method": "channels",
      "channels": channel_loop.summary(phase, final, config.pruning.channel_fraction),
  }
  model_path, metrics_path, config_path = write_outputs(
      config, workdir, stage_dir, tb_dir, final, metrics,
      {"pruning": {"steps": steps, "plan": not_pruned, "layers": report["layers"]},
       "data": bundle.describe()},
      {"final/params": float(metrics["params"])})
  progress.say("[%s] %s with %d parameters (%d before removing units; best epoch %s of "
        "%d, %.1f s) -> %s" % (config.stage, tasks.describe_result(metrics), metrics["params"],
                               params_before, best_epoch, epochs_run, train_seconds, model_path))
  timing.lap("saving")
  return StageResult(
      artifacts={"model": model_path, "metrics": metrics_path, "config": config_path},
      metrics=metrics)


STAGE = Stage(kind=NAME, config_type=StudentConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run, check_upstream=check_upstream)
