"""The pruning backend seam: what the stages ask of the library that prunes a student.

A student's layers are wrapped, trained with the wrappers' masks, and stripped; the stages never
touch the wrappers themselves. :func:`for_model` gives the backend for a built student; today
tfmot's prunes tf_keras students (:mod:`pipelines.prune.magnitude` and
:mod:`pipelines.prune.dynamic`); Keras 3 students, which tfmot cannot wrap, are pruned by
:mod:`pipelines.prune.keras3` with tfmot's schedules and mask rule, chosen here by the model's
Keras. Only this package and :mod:`pipelines.quantize` import tfmot
(an import-linter contract in ``setup.cfg``).
"""

import dataclasses
from typing import Callable, List, Optional

from models import keras3 as keras3_models
from pipelines.prune import dynamic, magnitude


@dataclasses.dataclass(frozen=True)
class PruningBackend:
  """The operations on a pruned student that the stages use.

  Attributes:
    name: the library, for progress lines and metrics.
    wrap: ``wrap(model, pruning_config, steps) -> (pruned, plan)``: the planned layers wrapped
      for the schedule of ``steps`` (``PruningConfig.resolve_steps``); ``plan`` says per layer
      ``"prune"`` or why not.
    step: ``step(pruned) -> int``: the current pruning step (-1 before training).
    callbacks: ``callbacks(pruned, tb_dir) -> list``: what advances the step and the masks during
      ``fit`` (first in the list), and writes per-layer sparsity to TensorBoard.
    strip: ``strip(pruned) -> model``: the plain model with the masks applied.
    revision: ``revision(pruned, pruning_config, steps) -> tf.Module``: dynamic pruning's mask
      revisions (run by the training step after the schedule's last mask update).
    revision_callbacks: ``revision_callbacks(revision, log_dir) -> list``.
    m_by_n_applied_step: ``m_by_n_applied_step(pruned, steps) -> int | None``.
    m_by_n_callbacks: ``m_by_n_callbacks(pruned, steps, log_dir) -> list``.
    sparsity_report: ``sparsity_report(stripped, plan, m_by_n=None, targets=None) -> dict``: the
      zeros of every pruned layer's kernels, measured on a stripped model.
    check_sparsity: ``check_sparsity(report, target, stage, m_by_n=None, cause=...)``: fails the
      stage when a layer or the total is short of its target.
  """

  name: str
  wrap: Callable
  step: Callable[[object], int]
  callbacks: Callable[[object, str], List]
  strip: Callable
  revision: Callable
  revision_callbacks: Callable[[object, str], List]
  m_by_n_applied_step: Callable[[object, dict], Optional[int]]
  m_by_n_callbacks: Callable[[object, dict, str], List]
  sparsity_report: Callable[..., dict]
  check_sparsity: Callable[..., None]


def for_model(model) -> PruningBackend:
  """The backend that prunes ``model``: tfmot for a tf_keras model, kdprune's own
  (:mod:`pipelines.prune.keras3`) for a Keras 3 one."""
  if keras3_models.is_keras3(model):
    return _keras3()
  return TFMOT


TFMOT = PruningBackend(
    name="tfmot",
    wrap=magnitude.apply_pruning,
    step=magnitude.pruning_step,
    callbacks=lambda pruned, tb_dir: list(magnitude.training_callbacks(tb_dir)),
    strip=magnitude.strip,
    revision=lambda pruned, config, steps: dynamic.MaskRevision(
        pruned, steps["mask_update_begin"], steps["mask_update_end"], steps["mask_update_every"],
        config.drop_fraction),
    revision_callbacks=lambda revision, log_dir: [dynamic.RevisionSummaries(revision, log_dir)],
    m_by_n_applied_step=magnitude.m_by_n_applied_step,
    m_by_n_callbacks=lambda pruned, steps, log_dir: [magnitude.MByNSummary(pruned, steps,
                                                                           log_dir)],
    sparsity_report=magnitude.sparsity_report,
    check_sparsity=magnitude.check_sparsity,
)


def _keras3() -> PruningBackend:
  """The Keras 3 backend (imported on first use: it imports Keras 3)."""
  from pipelines.prune import keras3  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return PruningBackend(
      name="keras3", wrap=keras3.wrap, step=keras3.step, callbacks=keras3.callbacks,
      strip=keras3.strip, revision=keras3.revision,
      revision_callbacks=TFMOT.revision_callbacks,  # the revisions are the same MaskRevision
      m_by_n_applied_step=keras3.m_by_n_applied_step, m_by_n_callbacks=keras3.m_by_n_callbacks,
      sparsity_report=keras3.sparsity_report, check_sparsity=keras3.check_sparsity)
