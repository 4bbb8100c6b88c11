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
