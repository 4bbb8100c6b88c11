"""``mlp``: a multilayer perceptron for flat inputs (images are flattened)."""

from models.compat import keras, output_dtype
from models.families import register


@register("mlp")
def build(input_shape, num_classes, *, width, depth, dropout, name="mlp", keras=keras):
  # ``keras``: the Keras that builds it (Keras 3 for ``--student_keras=3``; models/keras3.py).
  inputs = keras.Input(shape=input_shape, name="inputs")
  x = inputs
  if len(input_shape) > 1:
    x = keras.layers.Flatten(name="flatten")(x)
  for i in range(depth):
    x = keras.layers.Dense(width, name="dense_%d" % (i + 1))(x)
    x = keras.layers.ReLU(name="relu_%d" % (i + 1))(x)
    if dropout:
      x = keras.layers.Dropout(dropout, name="dropout_%d" % (i + 1))(x)
  outputs = keras.layers.Dense(num_classes, dtype=output_dtype(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name)
