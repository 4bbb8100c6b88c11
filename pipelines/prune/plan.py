"""Which layers of the student tfmot prunes, decided on kernel sizes alone (no TensorFlow).

:func:`plan` is the rule :func:`pipelines.prune.magnitude.plan_layers` applies
to a built model, and the student stage's ``validate`` applies to the sizes of
a built-in family's layers (``models.spec.kernel_layers``) before the teacher
trains, so that "no layer of the student would be pruned" is a one-line refusal
up front, not a failure after the teacher's training.
"""

from typing import Dict, Iterable, Optional, Sequence, Tuple

from pipelines.config.errors import ConfigError
from pipelines.config.pruning import PruningConfig

# (layer name, class name, kernel weights tfmot would prune (0: none), input channels)
Layer = Tuple[str, str, int, int]


def auto_keeps(size: int, total: int, config: PruningConfig) -> bool:
  """Whether ``keep_dense=auto`` leaves a layer of ``size`` kernel weights dense in a student of
  ``total`` prunable weights.

  A layer is kept dense when it is small in absolute terms (fewer than
  ``MIN_PRUNABLE_WEIGHTS``) *and* relative to the model (less than
  ``MIN_PRUNABLE_SHARE`` of its prunable weights). In an image model the small
  layers (first conv, logits) are a sliver of the weights: pruning them saves
  nothing and costs accuracy. In a small tabular MLP (a width-16 student on ten
  features) every layer is under 512 weights, and the absolute rule alone would
  leave nothing to prune; there the big layers *are* the model, so they are
  pruned and only the small share stays dense.
  """
  return size < config.MIN_PRUNABLE_WEIGHTS and size < config.MIN_PRUNABLE_SHARE * total


def plan(layers: Sequence[Layer], config: PruningConfig,
         model_layers: Optional[Iterable[Tuple[str, str]]] = None) -> Dict[str, str]:
  """Layer name -> ``"prune"`` or why not; raises ``ConfigError`` when the flags name layers that
  are not there or not pruned, or when no layer would be pruned.

  ``model_layers`` (``(name, class name)`` of every layer of the model) checks the layers the
  flags name; ``None`` skips those checks (only the kernel layers are known).
  """
  keep = set(config.keep_dense) - {"auto", ""}
  total = sum(size for _, _, size, _ in layers)
  out = {}
  for name, kind, size, channels in layers:
    if size == 0:
      out[name] = "no prunable weights"
    elif name in keep or kind in keep:
      out[name] = "kept dense by --pruning_keep_dense"
    elif "auto" in config.keep_dense and auto_keeps(size, total, config):
      out[name] = "kept dense: only %d weights (< %d, and < %d%% of the model's %d)" % (
          size, config.MIN_PRUNABLE_WEIGHTS, round(100 * config.MIN_PRUNABLE_SHARE), total)
    elif config.structure == "m_by_n" and not (channels > 0 and channels % config.m_by_n[1] == 0):
      out[name] = "kept dense: input channels (%d) not a multiple of %d for %d:%d" % (
          channels, config.m_by_n[1], *config.m_by_n)
    else:
      out[name] = "prune"
  if model_layers is not None:
    model_layers = list(model_layers)
    own = [name for name, _ in config.layer_sparsity]
    missing = [name for name in own if name not in out]
    if missing:
      raise ConfigError("--pruning_layer_sparsity names %s, which the student does not have "
                        "(layers with weights: %s)" % (", ".join(missing), ", ".join(out)))
    dense = [name for name in own if out[name] != "prune"]
    if dense:
      raise ConfigError("--pruning_layer_sparsity names %s, which is not pruned (%s)" % (
          ", ".join(dense), "; ".join(out[n] for n in dense)))
    unknown = keep - {n for n, _ in model_layers} - {k for _, k in model_layers}
    if unknown:
      raise ConfigError("--pruning_keep_dense names %s, which the student does not have "
                        "(layers: %s)" % (", ".join(sorted(unknown)),
                                          ", ".join(n for n, _ in model_layers)))
  if "prune" not in out.values():
    raise ConfigError("no layer of the student would be pruned (%s)" % "; ".join(
        "%s: %s" % kv for kv in out.items()))
  return out


# ----------------------------------------------------------------------------
# Channel pruning's schedule (pipelines.prune.channels removes the units).


def channel_schedule(steps: dict, steps_per_epoch: int, epochs: int, fraction: float,
             exponent: float) -> Dict[int, float]:
  """When units are removed: ``{epoch: fraction removed after that epoch}`` (epochs from 1).

  The fraction follows the magnitude-pruning polynomial
  ``f(t) = F (1 - (1 - (t - t_0) / (t_e - t_0))^exponent)`` at the end of
  every epoch between ``begin_step`` and ``end_step`` (from
  ``PruningConfig.resolve_steps``) and reaches ``fraction`` at the first epoch
  that ends at or after ``end_step``; only epochs where it grows are listed.
  At least one epoch must follow the last removal (the model trains, and
  early stopping chooses, at its final size): a schedule that leaves none is
  refused with a ConfigError.
  """
  begin, end = steps["begin_step"], steps["end_step"]
  out, last = {}, 0.0
  for epoch in range(1, epochs + 1):
    t = epoch * steps_per_epoch
    if t < begin or last >= fraction:
      continue
    if t >= end or end <= begin:
      f = fraction
    else:
      f = fraction * (1.0 - (1.0 - (t - begin) / float(end - begin)) ** exponent)
    if f > last:
      out[epoch] = round(f, 6)
      last = f
  if not out or max(out) >= epochs:
    raise ConfigError(
        "--pruning_structure=channels removes its last units after epoch %s of %d; at least one "
        "epoch must follow (lower --pruning_end or raise the epochs)" % (
            max(out) if out else "(never)", epochs))
  return out


def units_to_keep(original: int, fraction: float) -> int:
  """How many of ``original`` units survive once ``fraction`` of them is removed (at least 1)."""
  return max(1, original - int(round(original * fraction)))


def effective_schedule(plan: Dict[int, float], original: Dict[str, int]) -> Dict[int, float]:
  """``plan`` without the epochs whose fraction removes no further unit of any layer (layer ->
  original number of units): a rebuild that changes nothing would only reset the optimizer."""
  out, last = {}, 0.0
  for epoch in sorted(plan):
    if any(units_to_keep(n, plan[epoch]) < units_to_keep(n, last) for n in original.values()):
      out[epoch] = plan[epoch]
      last = plan[epoch]
  return out
