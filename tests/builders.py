"""User model builders referenced by tests as ``tests.builders:<name>``."""

from models.compat import keras


def tiny(input_shape, num_classes):
  inputs = keras.Input(input_shape)
  x = keras.layers.Flatten()(inputs)
  return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def keras3(input_shape, num_classes):
  import keras as keras3_module  # Keras 3, which tfmot cannot handle
  return keras3_module.Sequential([
      keras3_module.Input(input_shape), keras3_module.layers.Flatten(),
      keras3_module.layers.Dense(num_classes)])


class _Subclassed(keras.Model):

  def __init__(self, num_classes):
    super().__init__()
    self.flatten = keras.layers.Flatten()
    self.dense = keras.layers.Dense(num_classes)

  def call(self, x):
    return self.dense(self.flatten(x))


def subclassed(input_shape, num_classes):
  del input_shape
  return _Subclassed(num_classes)


def wrong_classes(input_shape, num_classes):
  return tiny(input_shape, num_classes + 1)


def raises(input_shape, num_classes):
  raise RuntimeError("builder exploded")


def no_args():
  return None


def softmax_dense(input_shape, num_classes):
  """A Functional builder whose classifier is Dense(activation="softmax") (the Applications way)."""
  inputs = keras.Input(input_shape)
  x = keras.layers.Flatten()(inputs)
  return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def softmax_layer(input_shape, num_classes):
  """A Sequential builder ending in a Softmax layer."""
  return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                           keras.layers.Dense(num_classes), keras.layers.Softmax()])


def softmax_nested(input_shape, num_classes):
  """A model whose softmax sits inside a nested head model."""
  head = keras.Sequential([keras.Input((int(input_shape[0] * input_shape[1] * input_shape[2]),)),
                           keras.layers.Dense(num_classes, activation="softmax")], name="head")
  inputs = keras.Input(input_shape)
  return keras.Model(inputs, head(keras.layers.Flatten()(inputs)))


def nested_sequential(input_shape, num_classes):
  """``Sequential([backbone, head])``: two models inside a model."""
  backbone = keras.Sequential([keras.Input(input_shape),
                               keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                               keras.layers.Flatten()], name="backbone")
  head = keras.Sequential([keras.Input(backbone.output_shape[1:]),
                           keras.layers.Dense(64, activation="relu"),
                           keras.layers.Dense(num_classes, name="logits")], name="head")
  return keras.Sequential([keras.Input(input_shape), backbone, head], name="nested")


def nested_functional(input_shape, num_classes):
  """A Functional model calling a Functional backbone, then its own classifier."""
  inner_in = keras.Input(input_shape)
  x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="inner_conv")(inner_in)
  backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(x), name="backbone")
  inputs = keras.Input(input_shape)
  features = backbone(inputs)
  hidden = keras.layers.Dense(64, activation="relu", name="hidden")(features)
  return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(hidden))
