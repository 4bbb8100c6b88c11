"""What to build, checked without importing TensorFlow.

:class:`ModelSpec` names a built-in family (``mlp``, ``cnn``, ``resnet``) or a
user builder ``package.module:function``; :func:`validate_spec` refuses an
unknown name or an out-of-range knob with one line naming the flag.
"""

import dataclasses
import importlib
import inspect
from typing import Dict, Optional

from models.errors import ConfigError

# Built-in families: name -> (one-line description, default width, depth, dropout).
# models/<family>.py registers the builder under the same name.
BUILTIN_FAMILIES: Dict[str, tuple] = {
    "mlp": ("MLP: Flatten, depth x [Dense(width), ReLU, Dropout], Dense(classes)", 256, 2, 0.0),
    "cnn": ("VGG-style CNN: depth x [2 x (Conv3x3, BN, ReLU), MaxPool], Dense(classes)",
            16, 2, 0.25),
    "resnet": ("ResNet: stem, 3 stages x depth basic blocks, GAP, Dense(classes)", 16, 2, 0.0),
}
_EXTRA_FAMILIES: Dict[str, tuple] = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A family name or ``module:function``, and its knobs (``None``: the family's default)."""

  name: str
  width: Optional[int] = None
  depth: Optional[int] = None
  dropout: Optional[float] = None

  @property
  def is_user_builder(self) -> bool:
    return ":" in self.name


def family_names():
  return sorted(set(BUILTIN_FAMILIES) | set(_EXTRA_FAMILIES))


def family_defaults(name: str) -> tuple:
  return (BUILTIN_FAMILIES.get(name) or _EXTRA_FAMILIES[name])[1:]


def describe_families() -> Dict[str, str]:
  """Family name -> one-line description with its default knobs."""
  out = {}
  for name in family_names():
    desc, width, depth, _ = BUILTIN_FAMILIES.get(name) or _EXTRA_FAMILIES[name]
    out[name] = "%s (width %d, depth %d)" % (desc, width, depth)
  return out


def validate_spec(spec: ModelSpec, flag: str) -> None:
  """Checks a spec without building anything; raises ConfigError naming ``flag``.

  ``flag`` is the model flag (``--teacher_model``); the knobs are named after it
  (``--teacher_width``, ``--teacher_depth``, ``--teacher_dropout``).
  """
  if spec.is_user_builder:
    resolve_user_builder(spec.name, flag)
  elif spec.name not in family_names():
    raise ConfigError("%s=%s: unknown model; choose one of %s, or package.module:function" % (
        flag, spec.name, ", ".join(family_names())))
  prefix = flag[:-len("_model")] if flag.endswith("_model") else flag
  for knob in ("width", "depth"):
    value = getattr(spec, knob)
    if value is not None and value < 1:
      raise ConfigError("%s_%s=%s must be >= 1" % (prefix, knob, value))
  if spec.dropout is not None and not 0.0 <= spec.dropout < 1.0:
    raise ConfigError("%s_dropout=%s must be in [0, 1)" % (prefix, spec.dropout))


def resolve_user_builder(name: str, flag: str):
  """Imports ``package.module:function`` and checks it takes (input_shape, num_classes)."""
  module_name, _, fn_name = name.partition(":")
  if not module_name or not fn_name:
    raise ConfigError("%s=%s: expected package.module:function" % (flag, name))
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError("%s=%s: cannot import %s (%s)" % (flag, name, module_name, e)) from None
  fn = getattr(module, fn_name, None)
  if fn is None or not callable(fn):
    raise ConfigError("%s=%s: %s has no function %s" % (flag, name, module_name, fn_name))
  try:
    inspect.signature(fn).bind(None, None)
  except TypeError:
    raise ConfigError("%s=%s: the builder must accept (input_shape, num_classes)" % (
        flag, name)) from None
  except ValueError:
    pass  # builtins without a signature: let the call decide
  return fn
