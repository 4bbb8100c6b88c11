"""Writes an untrained Keras 3 student for 28x28x1 inputs and 10 classes (MNIST), the kind a user
brings with ``--student_path``: BatchNormalization after every convolution, depthwise-separable
blocks (a nested Keras 3 model, which kdprune inlines), global average pooling and a softmax head
(which kdprune removes: it distils on logits).

  python -m benchmarks.keras3_user_student --out=runs/mine_k3.keras
  python -m pipelines.cli.pipeline --flagfile=launch/presets/mnist.cfg --workdir=runs/k3_user \
      --student_path=runs/mine_k3.keras
"""

import os

from absl import app, flags

from models import compat  # noqa: F401  (TensorFlow's start-up lines filtered)
from models import keras3 as keras3_models

flags.DEFINE_string("out", "mine_k3.keras", "Where to write the .keras file.")
flags.DEFINE_integer("width", 16, "Filters of the first convolution (doubling twice).")
FLAGS = flags.FLAGS


def build(width: int = 16, input_shape=(28, 28, 1), classes: int = 10):
  keras = keras3_models.keras3()  # Keras 3 (TensorFlow imported quietly by models.compat first)

  def conv_bn(x, filters, kernel, name):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=name + "_bn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x)

  def separable_block(channels, filters, name):
    inputs = keras.Input((None, None, channels))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=name + "_dw")(inputs)
    x = keras.layers.BatchNormalization(name=name + "_dw_bn")(x)
    x = keras.layers.ReLU(name=name + "_dw_relu")(x)
    return keras.Model(inputs, conv_bn(x, filters, 1, name + "_pw"), name=name)

  inputs = keras.Input(input_shape, name="image")
  x = conv_bn(inputs, width, 3, "stem")
  x = keras.layers.MaxPooling2D(2, name="pool1")(x)  # 14x14
  x = separable_block(width, 2 * width, "block1")(x)
  x = conv_bn(x, 2 * width, 3, "conv2")
  x = keras.layers.MaxPooling2D(2, name="pool2")(x)  # 7x7
  x = separable_block(2 * width, 4 * width, "block2")(x)
  x = conv_bn(x, 4 * width, 3, "conv3")
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
  return keras.Model(inputs, outputs, name="user_student")


def main(argv):
  del argv
  model = build(FLAGS.width)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  model.save(FLAGS.out)
  print("%s: Keras 3, %d parameters (untrained)" % (FLAGS.out, model.count_params()))


if __name__ == "__main__":
  app.run(main)
