"""Training with ``--pruning_structure=channels``: distillation while whole units go.

The phase trains in :func:`pipelines.train.loop.train` like every other. After each epoch that
:func:`pipelines.prune.plan.channel_schedule` names, the least important units of every shrinkable
layer are removed, the Functional student is rebuilt physically smaller with the surviving
weights (:func:`pipelines.prune.channels.step`) and training continues under the same
distillation loss with a fresh optimizer: the optimizer's slots (Adam's moments) belong to
variables that no longer exist, so they start at zero, while its step counter is set to the
global step so the learning-rate schedule goes on where it was.

Early stopping (``--student_patience``) and the choice of the best epoch only consider epochs
after the last rebuild, when the student has its final size (the loop's pruning-aware early
stopping, counting from the step after the last rebuild).

The epoch backups record the units of each layer: a killed run resumes into a student of the
size it had, rebuilt from the original student (the checkpoint then restores every weight).
"""

import dataclasses
import os
from typing import Tuple

import numpy as np

from models.compat import tf
from pipelines.config.errors import ConfigError
from pipelines.prune import channels
from pipelines.prune import plan as prune_plan
from pipelines.runtime import distribute, progress
from pipelines.train import distill, loop, optimizers, precision


def _trainer(student, teacher, config, steps_per_epoch: int, global_step: int):
  cfg = config.train
  trainer = distill.DistillationTrainer(
      student, teacher=teacher, temperature=config.distill.temperature,
      alpha=config.distill.alpha, distill=config.distill.enabled, task=config.data.task,
      regression_loss=config.data.regression_loss, **distill.trainer_options(config.distill))
  trainer.compile(optimizer=optimizers.make_optimizer(cfg, steps_per_epoch),
                  steps_per_execution=cfg.steps_per_execution)
  trainer.optimizer.iterations.assign(global_step)  # the learning-rate schedule goes on
  return trainer


def _plan(config, bundle, student):
  """``(chains, kept, original units, effective schedule)`` of ``student``, or a ConfigError
  when no unit would go."""
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  plan = prune_plan.channel_schedule(
      config.pruning.resolve_steps(steps_per_epoch, cfg.epochs), steps_per_epoch, cfg.epochs,
      config.pruning.channel_fraction, config.pruning.exponent)
  chains, kept = channels.analyze_model(student)
  if not chains:
    raise ConfigError("--pruning_structure=channels: no layer of the student can lose units (%s)"
                      % "; ".join("%s %s" % kv for kv in kept.items()))
  original = channels.units(student, chains)
  effective = prune_plan.effective_schedule(plan, original)
  if not effective:
    raise ConfigError(
        "--pruning_structure=channels: --channel_fraction=%g removes no unit of the student's "
        "shrinkable layers (%s): each would keep all of its units; raise --channel_fraction or "
        "widen the student" % (config.pruning.channel_fraction, ", ".join(
            "%s %d" % kv for kv in original.items())))
  return chains, kept, original, effective


def check_plan(config, bundle) -> None:
  """Refuses, before the teacher's outputs are computed, a channel plan that would remove no unit
  (every shrinkable layer too small for --channel_fraction) or a student with no layer that can
  lose units: one line instead of a failure once training is due."""
  _plan(config, bundle, distill.build_student(config, bundle))


def shrink_phase(config, bundle, online_teacher, log_dir: str) -> Tuple[loop.Phase, dict]:
  """The phase that trains the student for ``--student_epochs`` while removing units, for
  :func:`pipelines.train.loop.train`; ``log_dir`` gets the units per layer in TensorBoard.

  Returns ``(phase, info)``: ``info`` holds ``chains``, ``kept`` (layers kept whole, and why),
  ``original`` (units before), ``plan`` (epoch -> fraction kept), ``params_before`` and
  ``last_rebuild``.
  """
  cfg = config.train
  steps_per_epoch = bundle.steps_per_epoch(cfg.batch_size)
  scope = distribute.strategy().scope
  with scope(), precision.precision(cfg.mixed_precision):
    student = distill.build_student(config, bundle)
    chains, kept, original, plan = _plan(config, bundle, student)
    trainer = _trainer(student, online_teacher, config, steps_per_epoch, 0)
  last_rebuild = max(plan)
  info = {"chains": chains, "kept": kept, "original": original, "plan": plan,
          "params_before": student.count_params(), "last_rebuild": last_rebuild}
  progress.say("[%s] %s: %d parameters; removing %.2f of the units of %d layers (%s) after "
               "epochs %s; teacher outputs: %s" % (
                   config.stage, config.model.name, student.count_params(),
                   config.pruning.channel_fraction, len(chains), ", ".join(chains),
                   ", ".join("%d (%.3f)" % kv for kv in plan.items()),
                   "online" if online_teacher is not None else
                   ("cached" if config.distill.enabled else "none")))
  for layer, why in kept.items():
    progress.say("[%s] %s: %s" % (config.stage, layer, why))

  def rebuild(number: int, phase: loop.Phase) -> loop.Phase:
    with scope(), precision.precision(cfg.mixed_precision):
      smaller, removed = channels.step(phase.model, original, plan[number], chains)
      new = _trainer(smaller, online_teacher, config, steps_per_epoch, number * steps_per_epoch)
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "channels"))
    with writer.as_default():
      for layer, count in channels.units(smaller, chains).items():
        tf.summary.scalar("channels/units/" + layer, count, step=number)
      tf.summary.scalar("channels/params", smaller.count_params(), step=number)
    writer.close()
    progress.say("[%s] after epoch %d: removed %s -> %d parameters" % (
        config.stage, number, ", ".join("%s %d" % kv for kv in removed.items()) or "nothing",
        smaller.count_params()))
    return dataclasses.replace(phase, model=smaller, trainer=new)

  def reshape(units: dict) -> loop.Phase:
    with scope(), precision.precision(cfg.mixed_precision):
      resized = channels.shrink(student, {n: np.arange(int(k)) for n, k in units.items()}, chains)
      new = _trainer(resized, online_teacher, config, steps_per_epoch, 0)
    return dataclasses.replace(phase, model=resized, trainer=new)

  phase = loop.Phase(
      model=student, trainer=trainer,
      # Counts from the first step after the last rebuild: that epoch's figures are the larger
      # student's.
      final_step=last_rebuild * steps_per_epoch + 1,
      rebuild=rebuild, rebuild_after=sorted(plan),
      shape=lambda p: channels.units(p.model, chains), reshape=reshape)
  return phase, info


def summary(info: dict, trained: loop.Trained, model, fraction: float) -> dict:
  """The ``channels`` entry of metrics.json: units per layer before/after, layers kept whole, the
  schedule, and the parameters before and after."""
  after = channels.units(model, info["chains"])
  return {"layers": channels.describe(info["original"], after), "kept_whole": info["kept"],
          "schedule": {str(k): v for k, v in info["plan"].items()}, "fraction": fraction,
          "params_before": info["params_before"], "params_after": model.count_params(),
          "best_epoch": (trained.early.best_epoch + 1 if trained.early.best_epoch is not None
                         else None),
          "epochs_run": trained.epochs_run}
