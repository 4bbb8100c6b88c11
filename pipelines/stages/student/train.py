"""The student stage's work (TensorFlow imported here, at the top); its checks are in
:mod:`pipelines.stages.student`."""

import os

from pipelines.config import STUDENT as NAME
from pipelines.config import StudentConfig, tasks
from pipelines.prune import backend as prune_backend
from pipelines.prune import channels
from pipelines.runtime import distribute, progress, timing
from pipelines.runtime.execute import StageResult
from pipelines.stages.student import validate
from pipelines.train import channel_loop, distill, loop, optimizers, precision, student_source


def run(config: StudentConfig, workdir: str) -> StageResult:
  """Distils and prunes the student; saves it stripped under ``<workdir>/student/<name>/``."""
  validate(config)
  seed, bundle = loop.start(config)
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  steps = config.pruning.resolve_steps(steps_per_epoch, cfg.epochs)
  channels_first = config.pruning.structure == "channels"
  if channels_first:
    channel_loop.check_plan(config, bundle)  # before the teacher's outputs are computed
  teacher, train_ds, mode, cache_seconds = distill.teacher_and_batches(config, workdir, bundle,
                                                                       seed)
  online = teacher if mode == "online" else None
  val_ds = bundle.batches("validation", cfg.batch_size)
  stage_dir = distribute.output_dir(os.path.join(workdir, NAME, config.name))
  common = {"teacher_outputs": mode, "distill": config.distill.enabled,
            "teacher_cache_seconds": round(cache_seconds, 2)}

  shrunk = None  # whole units removed first: pipelines/train/channel_loop.py
  if channels_first:
    # Alone, or before tfmot sparsifies the shrunk student over another --student_epochs.
    folder = config.stage if not config.pruning.final_sparsity else os.path.join(
        config.stage, "shrink")
    phase, info = channel_loop.shrink_phase(
        config, bundle, online, distribute.output_dir(os.path.join(workdir, folder, "tb")))
    shrunk = loop.train(config, workdir, phase, train_ds, val_ds, "--student_learning_rate",
                        folder=folder, backup_last=bool(config.pruning.final_sparsity))
    if not config.pruning.final_sparsity:
      return _channels_result(config, workdir, stage_dir, bundle, shrunk, info, steps, common)

  with distribute.strategy().scope(), precision.precision(cfg.mixed_precision,
                                                         keras3=config.keras3):
    student = shrunk.model if shrunk else student_source.build(config, bundle)
    if teacher is not None and 0 < teacher.count_params() < student.count_params():
      progress.warn("[%s] warning: the student (%d parameters) is larger than its teacher (%d); "
                    "check --student_model/--student_width" % (
                        config.stage, student.count_params(), teacher.count_params()))
    backend = prune_backend.for_model(student)
    pruned, plan = backend.wrap(student, config.pruning, steps)
    # Dynamic pruning: the revisions own the mask once the schedule has its final sparsity.
    revision = backend.revision(pruned, config.pruning, steps) \
        if config.pruning.method == "dynamic" else None
    if backend.name == "keras3":  # a Keras 3 student: its own trainer (same losses, same logs)
      from pipelines.train import distill_keras3  # pylint: disable=g-import-not-at-top,import-outside-toplevel
      trainer = distill_keras3.DistillationTrainer(
          pruned, teacher=online, temperature=config.distill.temperature,
          alpha=config.distill.alpha, distill=config.distill.enabled, task=config.data.task,
          regression_loss=config.data.regression_loss, mask_revision=revision,
          mixup=config.distill.mixup)
      distill_keras3.compile_trainer(trainer, cfg, steps_per_epoch)
    else:
      trainer = distill.DistillationTrainer(
          pruned, teacher=online, temperature=config.distill.temperature,
          alpha=config.distill.alpha, distill=config.distill.enabled, mask_revision=revision,
          task=config.data.task, regression_loss=config.data.regression_loss,
          **distill.trainer_options(config.distill))  # --feature_distill, --mixup
      trainer.compile(optimizer=optimizers.make_optimizer(cfg, steps_per_epoch),
                      steps_per_execution=cfg.steps_per_execution)
  timing.lap("build")

  def own_callbacks(tb_dir: str):
    return [*backend.callbacks(pruned, tb_dir),
            *(backend.revision_callbacks(revision, os.path.join(tb_dir, "train"))
              if revision is not None else []),
            *(backend.m_by_n_callbacks(pruned, steps, os.path.join(tb_dir, "train"))
              if config.pruning.structure == "m_by_n" else [])]

  phase = loop.Phase(
      model=pruned, trainer=trainer, final_step=steps["final_step"],
      step_fn=lambda: backend.step(pruned), tensorboard=False, extra=revision,
      callbacks=own_callbacks)
  pruned_names = [n for n, why in plan.items() if why == "prune"]
  targets = {n: config.pruning.target_for(n) for n in pruned_names}
  own = ", ".join("%s %.2f" % kv for kv in config.pruning.layer_sparsity)
  progress.say("[%s] %s (%s, pruned by %s): %d parameters; pruning %d layers to %.2f%s %s (steps "
               "%d-%d every %d of %d); teacher outputs: %s" % (
                   config.stage, student_source.describe(config),
                   "Keras 3" if backend.name == "keras3" else "tf_keras", backend.name,
                   student.count_params(), len(pruned_names),
                   config.pruning.target, " (%s)" % own if own else "", config.pruning.structure,
                   steps["begin_step"], steps["end_step"], steps["frequency"],
                   steps["planned_steps"], mode))
  if revision is not None:
    progress.say("[%s] dynamic pruning: at the final sparsity, masks revised every %d steps from "
                 "step %d until step %d (drop fraction %.2f decaying to 0)" % (
                     config.stage, steps["mask_update_every"], steps["mask_update_begin"],
                     steps["mask_update_end"], config.pruning.drop_fraction))
  for layer, why in plan.items():
    if why != "prune" and why != "no prunable weights":
      progress.say("[%s] %s: %s" % (config.stage, layer, why))
  # A shrink phase that trained again leaves nothing of this phase's backup to resume.
  trained = loop.train(config, workdir, phase, train_ds, val_ds, "--student_learning_rate",
                       fresh=bool(shrunk) and shrunk.epochs_run > shrunk.done)

  stripped = precision.to_float32(backend.strip(pruned))  # what is measured is what is saved
  m_by_n = config.pruning.m_by_n if config.pruning.structure == "m_by_n" else None
  report = backend.sparsity_report(stripped, plan, m_by_n, targets=targets)
  metrics = {
      **loop.evaluate_splits(stripped, bundle, config.data),
      "sparsity": report["sparsity"], "target_sparsity": report["target"],
      "model_sparsity": report["model_sparsity"], "params": report["params"],
      "nonzero_params": report["nonzero_params"], **trained.metrics(cfg),
      "first_final_sparsity_epoch": (trained.early.first_final_epoch + 1
                                     if trained.early.first_final_epoch is not None else None),
      **common, **distill.agreement_metrics(trained.history),
      "pruning_method": config.pruning.method,
      **({"pruning_backend": backend.name} if backend.name != "tfmot" else {}),
  }
  if m_by_n:
    metrics["m_by_n_applied_step"] = backend.m_by_n_applied_step(pruned, steps)
  if revision is not None:
    metrics.update(revision.report())
  if shrunk:
    metrics["channels"] = channel_loop.summary(info, shrunk, stripped,
                                               config.pruning.channel_fraction)
  artifacts = loop.write_outputs(
      config, workdir, stage_dir, trained.tb_dir, metrics,
      {"pruning": {"steps": steps, "plan": plan, "layers": report["layers"]},
       "data": bundle.describe()},
      lambda: loop.save_keras(stripped, stage_dir),
      final={"final/sparsity": metrics["sparsity"],
             "final/nonzero_params": float(metrics["nonzero_params"])},
      check=lambda: backend.check_sparsity(report, report["target"], config.stage, m_by_n))
  progress.say("[%s] %s at sparsity %.4f (%d of %d parameters nonzero; best epoch %s of "
               "%d, %.1f s) -> %s" % (
                   config.stage, tasks.describe_result(metrics), metrics["sparsity"],
                   metrics["nonzero_params"], metrics["params"], metrics["best_epoch"],
                   trained.epochs_run, trained.train_seconds, artifacts["model"]))
  for done in (trained, shrunk):
    if done is not None:
      done.saver.discard()
  timing.lap("saving")
  return StageResult(artifacts=artifacts, metrics=metrics)


def _channels_result(config: StudentConfig, workdir: str, stage_dir: str, bundle, trained,
                     info: dict, steps: dict, common: dict) -> StageResult:
  """Saves the student that lost units (and no weights otherwise) like any student."""
  final = precision.to_float32(trained.model)
  after = channels.units(final, info["chains"])
  not_pruned = dict(info["kept"])
  not_pruned.update({name: "channels: %d of %d units kept" % (after[name], info["original"][name])
                     for name in info["chains"]})
  report = prune_backend.for_model(final).sparsity_report(final, not_pruned)
  metrics = {
      **loop.evaluate_splits(final, bundle, config.data),
      "sparsity": report["sparsity"], "target_sparsity": 0.0,
      "model_sparsity": report["model_sparsity"], "params": report["params"],
      "params_before_channels": info["params_before"],
      "nonzero_params": report["nonzero_params"], **trained.metrics(config.train),
      "first_final_sparsity_epoch": info["last_rebuild"] + 1, **common,
      **distill.agreement_metrics(trained.history),
      "pruning_method": "channels",
      "channels": channel_loop.summary(info, trained, final, config.pruning.channel_fraction),
  }
  artifacts = loop.write_outputs(
      config, workdir, stage_dir, trained.tb_dir, metrics,
      {"pruning": {"steps": steps, "plan": not_pruned, "layers": report["layers"]},
       "data": bundle.describe()},
      lambda: loop.save_keras(final, stage_dir), final={"final/params": float(metrics["params"])})
  progress.say("[%s] %s with %d parameters (%d before removing units; best epoch %s of "
               "%d, %.1f s) -> %s" % (
                   config.stage, tasks.describe_result(metrics), metrics["params"],
                   info["params_before"], metrics["best_epoch"], trained.epochs_run,
                   trained.train_seconds, artifacts["model"]))
  trained.saver.discard()
  timing.lap("saving")
  return StageResult(artifacts=artifacts, metrics=metrics)
