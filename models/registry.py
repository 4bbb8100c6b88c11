"""Registry of model families, and the user's own builders.

A family is a function ``build(input_shape, num_classes, *, width, depth,
dropout, name) -> keras.Model`` returning *logits* (no softmax): distillation
needs them, and ``argmax`` is unchanged. Families are registered with
:func:`register`; ``width`` / ``depth`` / ``dropout`` left as ``None`` take
the family's defaults.

A user builder is named ``package.module:function`` and is called as
``function(input_shape, num_classes)``; it must return a Functional or
Sequential tf_keras model whose output is ``[batch, num_classes]`` logits.
Keras 3 models and subclassed models are refused: tfmot can neither prune nor
quantize them (tfmot #965, #1141; tf-keras #490).

Example:
  >>> from models import ModelSpec, build_model
  >>> m = build_model(ModelSpec("cnn", width=8, depth=2), (8, 8, 1), 10)
  >>> m.output_shape
  (None, 10)
"""

from typing import Dict, Optional, Tuple

from models import flatten, heads
from models import spec as spec_lib
from models.families import BUILDERS as _BUILDERS
from models.families import register  # noqa: F401  (re-exported)
from models.compat import describe_keras_object, keras
from models.errors import ConfigError
from models.spec import ModelSpec, resolve_user_builder, validate_spec  # noqa: F401

def available() -> Dict[str, str]:
  """Family name -> one-line description (with default knobs)."""
  _ensure_families()
  return spec_lib.describe_families()


def build_model(spec: ModelSpec, input_shape: Tuple[int, ...], num_classes: int,
                name: Optional[str] = None, flag: str = "--model") -> keras.Model:
  """Builds and checks the model ``spec`` describes.

  Raises:
    ConfigError: unknown family, unimportable builder, or a built model that
      kdprune cannot prune/quantize (Keras 3, subclassed, wrong shapes).
  """
  _ensure_families()
  validate_spec(spec, flag)
  input_shape = tuple(int(d) for d in input_shape)
  if spec.is_user_builder:
    fn = resolve_user_builder(spec.name, flag)
    try:
      model = fn(input_shape, num_classes)
    except ConfigError:
      raise
    except Exception as e:
      raise ConfigError("%s=%s: the builder raised %s: %s" % (
          flag, spec.name, type(e).__name__, str(e).splitlines()[0] if str(e) else "")) from e
    if isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False):
      model, _ = flatten.flatten(model, "%s=%s" % (flag, spec.name))
      model, _ = heads.to_logits(model, "%s=%s" % (flag, spec.name))
  else:
    width, depth, dropout = spec_lib.family_defaults(spec.name)
    try:
      model = _BUILDERS[spec.name](
          input_shape, num_classes,
          width=spec.width if spec.width is not None else width,
          depth=spec.depth if spec.depth is not None else depth,
          dropout=spec.dropout if spec.dropout is not None else dropout,
          name=name or spec.name)
    except ValueError as e:  # the family cannot take this data (e.g. a CNN on vectors)
      raise ConfigError("%s=%s: %s" % (flag, spec.name, e)) from None
  check_model(model, input_shape, num_classes, "%s=%s" % (flag, spec.name))
  return model


def check_model(model, input_shape, num_classes: int, what: str) -> None:
  """Refuses models tfmot cannot handle, with a message that says what to do."""
  if not isinstance(model, keras.Model):
    raise ConfigError(
        "%s returned %s; kdprune needs a tf_keras model (tfmot does not support Keras 3): "
        "build it with `from models.compat import keras` or `import tf_keras as keras`"
        % (what, describe_keras_object(model)))
  if not getattr(model, "_is_graph_network", False):
    raise ConfigError(
        "%s returned a subclassed model (%s); tfmot cannot prune or quantize subclassed "
        "models: build it with the Functional API or keras.Sequential" % (
            what, type(model).__name__))
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ConfigError("%s: model must have one input and one output (has %d and %d)" % (
        what, len(model.inputs), len(model.outputs)))
  got_in = tuple(model.input_shape[1:])
  if got_in != tuple(input_shape):
    raise ConfigError("%s: model input shape %s does not match the data's %s" % (
        what, got_in, tuple(input_shape)))
  if tuple(model.output_shape[1:]) != (num_classes,):
    raise ConfigError("%s: model output shape %s does not match the data's %d classes" % (
        what, tuple(model.output_shape[1:]), num_classes))


def _ensure_families():
  # Importing the family modules registers them.
  from models import applications, cnn, lenet, mlp, resnet  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
