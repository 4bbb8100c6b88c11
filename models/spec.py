"""What to build, checked without importing TensorFlow.

:class:`ModelSpec` names a built-in family (``mlp``, ``cnn``, ``lenet``, ``tinycnn``, ``resnet``)
or a user builder ``package.module:function``; :func:`validate_spec` refuses an
unknown name or an out-of-range knob with one line naming the flag.
"""

import dataclasses
import importlib
import inspect
from typing import Dict, List, Optional

from models.errors import ConfigError

# Built-in families: name -> (one-line description, default width, depth, dropout).
# models/<family>.py registers the builder under the same name.
BUILTIN_FAMILIES: Dict[str, tuple] = {
    "mlp": ("MLP: Flatten, depth x [Dense(width), ReLU, Dropout], Dense(classes)", 256, 2, 0.0),
    "cnn": ("VGG-style CNN: depth x [2 x (Conv3x3, BN, ReLU), MaxPool], Dense(classes)",
            16, 2, 0.25),
    "lenet": ("LeNet-style CNN: depth x [Conv3x3, BN, ReLU, MaxPool], Dense(8 x width), ReLU, "
              "Dropout, Dense(classes)", 32, 2, 0.25),
    "tinycnn": ("LeNet-style CNN without the hidden Dense: depth x [Conv3x3, BN, ReLU, MaxPool], "
                "Dense(classes)", 8, 3, 0.0),
    "resnet": ("ResNet: stem, 3 stages x depth basic blocks, GAP, Dense(classes)", 16, 2, 0.0),
    # Keras Applications (models/applications.py): width is the width multiplier, depth unused.
    "mobilenet_v2": ("Keras MobileNetV2 (width: alpha), GAP, Dense(classes)", 1.0, 1, 0.0),
    "mobilenet_v3_small": ("Keras MobileNetV3-Small (width: alpha), GAP, Dense(classes)",
                           1.0, 1, 0.0),
    "mobilenet_v3_large": ("Keras MobileNetV3-Large (width: alpha), GAP, Dense(classes)",
                           1.0, 1, 0.0),
    "efficientnet_b0": ("Keras EfficientNet-B0 (width: width_coefficient), GAP, Dense(classes)",
                        1.0, 1, 0.0),
    "resnet50": ("Keras ResNet-50 (no width multiplier), GAP, Dense(classes)", 1.0, 1, 0.0),
}
# lenet's hidden Dense has this many units per unit of width (models/lenet.py builds it).
LENET_HIDDEN_PER_WIDTH = 8
# Families whose width is a float multiplier and whose depth is fixed.
APPLICATION_FAMILIES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                        "efficientnet_b0", "resnet50")
_EXTRA_FAMILIES: Dict[str, tuple] = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A family name or ``module:function``, and its knobs (``None``: the family's default)."""

  name: str
  width: Optional[float] = None  # an int, except for APPLICATION_FAMILIES' multipliers
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
    if name in APPLICATION_FAMILIES:
      out[name] = "%s (width %g)" % (desc, width)
    else:
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
  if spec.name in APPLICATION_FAMILIES:
    if spec.width is not None and not spec.width > 0:
      raise ConfigError("%s_width=%s must be > 0 (%s's width multiplier)" % (
          prefix, spec.width, spec.name))
    if spec.name == "resnet50" and spec.width not in (None, 1):
      raise ConfigError("%s_width=%s: resnet50 has no width multiplier (leave it unset or 1); "
                        "use mobilenet_v2, mobilenet_v3_* or efficientnet_b0 for a narrower "
                        "model" % (prefix, spec.width))
  elif spec.width is not None and spec.width != int(spec.width):
    raise ConfigError("%s_width=%s must be a whole number for %s (a multiplier is for the "
                      "Keras Applications families)" % (prefix, spec.width, spec.name))
  for knob in ("width", "depth"):
    if knob == "width" and spec.name in APPLICATION_FAMILIES:
      continue
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


def kernel_layers(spec: ModelSpec, input_shape, num_classes: int) -> Optional[list]:
  """``[(layer name, class name, kernel weights, input channels)]`` of a built-in family's model,
  computed from the spec without TensorFlow (``None`` for other families).

  Lets a stage decide, before any training, which layers the student would
  prune. ``tests/test_models.py`` keeps it in step with the builders.
  """
  if spec.name not in BUILTIN_FAMILIES or spec.is_user_builder or spec.name in APPLICATION_FAMILIES:
    return None  # applications: their layers are known once built
  width, depth, _ = family_defaults(spec.name)
  width = spec.width if spec.width is not None else width
  depth = spec.depth if spec.depth is not None else depth
  shape = tuple(int(d) for d in input_shape)
  out = []

  def add(name, kind, cin, cout, k=1):
    out.append((name, kind, k * k * cin * cout, cin))

  if spec.name == "mlp":
    cin = 1
    for d in shape:
      cin *= d
    for i in range(depth):
      add("dense_%d" % (i + 1), "Dense", cin, width)
      cin = width
  elif len(shape) != 3:
    return None  # the builder refuses it, naming the flag
  elif spec.name == "cnn":
    h, w, cin = shape
    size = min(h, w)
    for b in range(depth):
      filters = width * 2 ** b
      for c in range(2):
        add("conv_%d_%d" % (b + 1, c + 1), "Conv2D", cin, filters, 3)
        cin = filters
      if size >= 4:
        h, w, size = h // 2, w // 2, size // 2
    cin = h * w * cin
  elif spec.name in ("lenet", "tinycnn"):
    h, w, cin = shape
    size = min(h, w)
    for b in range(depth):
      add("conv_%d" % (b + 1), "Conv2D", cin, width * 2 ** b, 3)
      cin = width * 2 ** b
      if size >= 4:
        h, w, size = h // 2, w // 2, size // 2
    cin = h * w * cin
    if spec.name == "lenet":
      add("dense", "Dense", cin, LENET_HIDDEN_PER_WIDTH * width)
      cin = LENET_HIDDEN_PER_WIDTH * width
  else:  # resnet
    add("stem_conv", "Conv2D", shape[2], width, 3)
    cin, size = width, min(shape[0], shape[1])
    for s in range(3):
      filters = width * 2 ** s
      for b in range(depth):
        stride = 2 if (s > 0 and b == 0 and size >= 4) else 1
        if stride == 2:
          size = -(-size // 2)
        name = "stage%d_block%d" % (s + 1, b + 1)
        add(name + "_a_conv", "Conv2D", cin, filters, 3)
        add(name + "_b_conv", "Conv2D", filters, filters, 3)
        if stride != 1 or cin != filters:
          add(name + "_proj", "Conv2D", cin, filters)
        cin = filters
  add("logits", "Dense", cin, num_classes)
  return out


def layer_names(spec: ModelSpec, input_shape) -> Optional[List[str]]:
  """The names of the layers (after the input) of a ``mlp``, ``cnn``, ``lenet`` or ``tinycnn``
  model, in order, computed from the spec without TensorFlow (``None`` for other families: their
  names are known once built). ``tests/test_models.py`` keeps it in step with the builders."""
  if spec.name not in ("mlp", "cnn", "lenet", "tinycnn") or spec.is_user_builder:
    return None
  _, depth, dropout = family_defaults(spec.name)
  depth = spec.depth if spec.depth is not None else depth
  dropout = spec.dropout if spec.dropout is not None else dropout
  shape = tuple(int(d) for d in input_shape)
  out = []
  if spec.name == "mlp":
    if len(shape) > 1:
      out.append("flatten")
    for i in range(1, depth + 1):
      out += ["dense_%d" % i, "relu_%d" % i] + (["dropout_%d" % i] if dropout else [])
    return out + ["logits"]
  if len(shape) != 3:
    return None  # the builder refuses it, naming the flag
  size = min(shape[0], shape[1])
  for b in range(1, depth + 1):
    tags = ["%d_%d" % (b, c) for c in (1, 2)] if spec.name == "cnn" else ["%d" % b]
    for tag in tags:
      out += ["conv_" + tag, "bn_" + tag, "relu_" + tag]
    if size >= 4:
      out.append("pool_%d" % b)
      size //= 2
  out.append("flatten")
  if spec.name == "lenet":
    out += ["dense", "relu_dense"]
  return out + (["dropout"] if dropout else []) + ["logits"]
