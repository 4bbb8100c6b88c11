"""Magnitude pruning with tfmot: schedules, choosing the layers, strip, sparsity checks.

The student is pruned layer by layer (``clone_model`` with a clone function,
as tfmot's guide does), never through a distillation wrapper, so tfmot sees a
plain Functional model. The sparsity that was asked for is never assumed:
:func:`sparsity_report` measures it on the stripped kernels, and
:func:`check_sparsity` fails the stage when it is short.
"""

from typing import Dict, List, Optional

import numpy as np

from models.compat import keras, tf
from pipelines.config.errors import StageError
from pipelines.config.pruning import PruningConfig
from pipelines.prune import plan as plan_lib

import tensorflow_model_optimization as tfmot  # noqa: E402  (after compat: Keras 2)
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # noqa: E402

SPARSITY_TOLERANCE = 0.005


def make_schedule(config: PruningConfig, steps: dict, target: Optional[float] = None):
  """The tfmot schedule for ``config`` with resolved ``steps`` (see PruningConfig.resolve_steps),
  ending at ``target`` (default: ``config.target``)."""
  sparsity = tfmot.sparsity.keras
  target = config.target if target is None else target
  if config.schedule == "constant" or config.structure == "m_by_n":
    return sparsity.ConstantSparsity(target, begin_step=steps["begin_step"],
                                     end_step=steps["end_step"], frequency=steps["frequency"])
  return sparsity.PolynomialDecay(
      initial_sparsity=config.initial_sparsity, final_sparsity=target,
      begin_step=steps["begin_step"], end_step=steps["end_step"], power=config.exponent,
      frequency=steps["frequency"])


def prunable_weights(layer) -> List:
  """The weights tfmot prunes in ``layer`` (``kernel``, ``depthwise_kernel``, ...); [] if none."""
  if not prune_registry.PruneRegistry.supports(layer):
    return []
  if hasattr(layer, "get_prunable_weights"):  # a layer that declares its own
    return list(layer.get_prunable_weights())
  names = prune_registry.PruneRegistry._weight_names(layer)  # pylint: disable=protected-access
  return [getattr(layer, name) for name in names]


def _kernel_size(layer) -> int:
  return int(sum(np.prod(w.shape) for w in prunable_weights(layer)))


def plan_layers(model, config: PruningConfig) -> Dict[str, str]:
  """Decides for each layer with weights whether it is pruned: name -> "prune" or why not
  (the rule is :func:`pipelines.prune.plan.plan`, on the layers' kernel sizes)."""
  layers = [(l.name, type(l).__name__, _kernel_size(l), _input_channels(l))
            for l in model.layers if l.weights]
  return plan_lib.plan(layers, config,
                       model_layers=[(l.name, type(l).__name__) for l in model.layers])


def _input_channels(layer) -> int:
  weights = prunable_weights(layer)
  return int(weights[0].shape[-2]) if weights and len(weights[0].shape) >= 2 else 0


# tfmot's wrappers are graph-safe Python: building the wrapped model without AutoGraph spares
# converting them (the stages' training functions run without it too; see distill.py).
@tf.autograph.experimental.do_not_convert
def apply_pruning(model, config: PruningConfig, steps: dict):
  """Wraps the planned layers of ``model`` with ``prune_low_magnitude``.

  Returns ``(pruned_model, plan)``.
  """
  plan = plan_layers(model, config)
  params = {}
  if config.structure == "m_by_n":
    params["sparsity_m_by_n"] = tuple(config.m_by_n)

  def clone(layer):
    if plan.get(layer.name) == "prune":
      schedule = make_schedule(config, steps, config.target_for(layer.name))
      # The wrapper computes in its layer's dtype: a float32 ``logits`` layer of a mixed-precision
      # model (models.compat.output_dtype) would otherwise be fed float16 weights by the wrapper's
      # autocast and fail to mask them with its float32 mask.
      return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule,
                                                      dtype=layer.dtype_policy, **params)
    return layer

  # Unpruned layers are reused and pruned ones wrap the original layer, so the
  # weights carry over (as in tfmot's guide).
  return m_by_n_from_begin(keras.models.clone_model(model, clone_function=clone), config,
                           steps), plan


def m_by_n_step(steps: dict) -> int:
  """The step whose forward pass sets the m:n masks: ``final_step`` (= ``--pruning_begin``,
  or the first step of tfmot's grid when that is 0; see PruningConfig.resolve_steps)."""
  return int(steps["final_step"])


def m_by_n_from_begin(pruned, config: PruningConfig, steps: dict):
  """Makes the m:n wrappers of ``pruned`` set their masks at :func:`m_by_n_step` instead of at
  step 1; returns ``pruned``. Does nothing for other structures.

  tfmot computes an m:n mask only when ``pruning_step == 1``
  (``Pruning.conditional_mask_update``), whatever the schedule says, so the
  pattern came from the initial weights and ``--pruning_begin`` was ignored.
  Each wrapper's ``Pruning`` is rebuilt with a step function that reads
  ``pruning_step - (apply_step - 1)``, so that test holds at ``apply_step``
  only, inside the training step. For m:n that function is read by nothing else
  (the unstructured threshold path and ``add_pruning_summaries`` are not used,
  and the ConstantSparsity schedule is the same at every step). Everything else
  is tfmot's: the mask computation (``_update_mask_sparsity_m_by_n``), the
  cross-replica update under a distribution strategy, ``weights * mask`` every
  step, the mask variable of the wrapper (checkpointed with it, so backups
  resume) and strip_pruning. As in tfmot the mask is computed once and kept:
  pruned weights are zeroed every step, so recomputing could only move zeros.
  """
  if config.structure != "m_by_n":
    return pruned
  shift = np.int64(m_by_n_step(steps) - 1)
  for layer in pruned_layers(pruned):
    old = layer.pruning_obj
    step_fn = old._step_fn  # pylint: disable=protected-access
    layer.pruning_obj = pruning_impl.Pruning(
        training_step_fn=lambda step_fn=step_fn: step_fn() - shift,
        pruning_vars=old._pruning_vars, pruning_schedule=old._pruning_schedule,  # pylint: disable=protected-access
        block_size=old._block_size, block_pooling_type=old._block_pooling_type,  # pylint: disable=protected-access
        sparsity_m_by_n=old._sparsity_m_by_n)  # pylint: disable=protected-access
  return pruned


def m_by_n_applied_step(pruned, steps: dict) -> Optional[int]:
  """The step at which the m:n masks of ``pruned`` were set, or None if not yet: every
  wrapper has passed :func:`m_by_n_step` and holds a mask with zeros."""
  layers = pruned_layers(pruned)
  step = m_by_n_step(steps)
  if not layers or pruning_step(pruned) < step:
    return None
  masks = [mask for layer in layers for _, mask, _ in layer.pruning_vars]
  return step if all(float(tf.reduce_min(mask)) == 0.0 for mask in masks) else None


class MByNSummary(keras.callbacks.Callback):
  """Writes ``m_by_n/applied_step`` to ``log_dir`` once, at the step where the m:n masks were
  set (checked at each epoch end, so exact whatever ``steps_per_execution`` is)."""

  def __init__(self, pruned, steps: dict, log_dir: str, applied_step=None):
    super().__init__()
    self.pruned, self.steps, self.log_dir = pruned, steps, log_dir
    # ``applied_step(pruned, steps)``: :func:`m_by_n_applied_step`, or the Keras 3 backend's.
    self.applied_step = applied_step or m_by_n_applied_step
    self.written = False

  def on_train_begin(self, logs=None):
    self.written = self.applied_step(self.pruned, self.steps) is not None  # resumed after it

  def on_epoch_end(self, epoch, logs=None):
    if self.written:
      return
    step = self.applied_step(self.pruned, self.steps)
    if step is None:
      return
    writer = tf.summary.create_file_writer(self.log_dir)
    with writer.as_default(step=step):
      tf.summary.scalar("m_by_n/applied_step", step)
    writer.close()
    self.written = True


def pruned_layers(model) -> List:
  return pruning_wrapper.collect_prunable_layers(model)


def pruning_step(model) -> int:
  """The current tfmot pruning step of ``model`` (-1 before training starts)."""
  layers = pruned_layers(model)
  return int(layers[0].pruning_step.numpy()) if layers else -1


def training_callbacks(log_dir: str):
  """``(step, summaries)``: the callbacks a model with pruning wrappers trains with: tfmot's
  ``UpdatePruningStep`` (advances each wrapper's step and its masks; first in the list) and its
  ``PruningSummaries`` (sparsity and threshold per layer, to TensorBoard under ``log_dir``)."""
  return (tfmot.sparsity.keras.UpdatePruningStep(),
          tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir, update_freq="epoch",
                                                profile_batch=0, write_graph=False))


def strip(model):
  """The model without pruning wrappers (masks applied), for export and measurement."""
  return tfmot.sparsity.keras.strip_pruning(model)


def sparsity_report(stripped, plan: Dict[str, str], m_by_n=None,
                    targets: Optional[Dict[str, float]] = None, weights_of=None) -> dict:
  """Measures the stripped model: per pruned layer and in total.

  Returns ``{"layers": {name: {"weights", "zeros", "sparsity"[, "target", "m_by_n_ok"]}},
  "pruned_weights", "pruned_zeros", "sparsity"[, "target"], "params", "nonzero_params",
  "model_sparsity"}``; ``sparsity`` is over the pruned kernels, ``model_sparsity``
  over every parameter. With ``targets`` (layer -> final sparsity) each layer
  records its target and ``target`` is their weight-weighted mean. ``weights_of(layer)`` gives a
  layer's pruned weights (default :func:`prunable_weights`; the Keras 3 backend passes its own).
  """
  weights_of = weights_of or prunable_weights
  layers = {}
  total_w = total_z = 0
  weighted_target = 0.0
  for layer in stripped.layers:
    if plan.get(layer.name) != "prune":
      continue
    kernels = [np.asarray(w.numpy()) for w in weights_of(layer)]
    size = int(sum(k.size for k in kernels))
    zeros = int(sum(np.sum(k == 0) for k in kernels))
    entry = {"weights": size, "zeros": zeros, "sparsity": round(zeros / max(1, size), 6)}
    if targets is not None:
      entry["target"] = float(targets[layer.name])
      weighted_target += entry["target"] * size
    if m_by_n is not None:
      entry["m_by_n_ok"] = all(bool(pruning_utils.is_pruned_m_by_n(
          tf.constant(k), m_by_n=tuple(m_by_n), last_channel="C_OUT")) for k in kernels)
    layers[layer.name] = entry
    total_w += size
    total_z += zeros
  params = sum(int(np.prod(w.shape)) for w in stripped.weights)
  nonzero = sum(int(np.count_nonzero(w)) for w in stripped.get_weights())
  report = {"layers": layers, "pruned_weights": int(total_w), "pruned_zeros": int(total_z),
            "sparsity": round(total_z / max(1, total_w), 6), "params": params,
            "nonzero_params": nonzero, "model_sparsity": round(1 - nonzero / max(1, params), 6)}
  if targets is not None:
    report["target"] = round(weighted_target / max(1, total_w), 6)
  return report


def check_sparsity(report: dict, target: float, stage: str, m_by_n=None,
                   cause: str = "the pruning schedule did not complete") -> None:
  """Fails the stage if any pruned layer (or the total) is short of its target by > 0.005.

  A layer's target is its report entry's ``target`` when there is one, else
  ``target``; the total's is the report's ``target``, else ``target``.
  """
  short = [(n, e["sparsity"]) for n, e in report["layers"].items()
           if e["sparsity"] < e.get("target", target) - SPARSITY_TOLERANCE]
  target = report.get("target", target)
  if report["sparsity"] < target - SPARSITY_TOLERANCE or short:
    raise StageError(stage, "sparsity %.4f is below the target %.4f (layers short: %s); %s" % (
        report["sparsity"], target, ", ".join("%s %.4f" % s for s in short) or "none", cause))
  if m_by_n is not None:
    bad = [n for n, e in report["layers"].items() if not e.get("m_by_n_ok")]
    if bad:
      raise StageError(stage, "layers %s do not have the %d:%d sparsity pattern" % (
          ", ".join(bad), *m_by_n))
