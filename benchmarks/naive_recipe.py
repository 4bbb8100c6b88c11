"""The naive recipe: distillation + pruning + PQAT + int8 TFLite, straight from the public tutorials.

A self-contained baseline that imports nothing from kdprune. It is what a user gets by
copying three public examples and gluing them together on MNIST:

* TensorFlow Model Optimization, "Pruning in Keras example"
  (`prune_low_magnitude` + `PolynomialDecay` + `UpdatePruningStep`, then `strip_pruning`);
* TensorFlow Model Optimization, "Sparsity preserving quantization aware training"
  (`quantize_annotate_model` + `quantize_apply(..., Default8BitPrunePreserveQuantizeScheme())`,
  fine-tuning on hard labels, `TFLiteConverter.from_keras_model` with `Optimize.DEFAULT`);
* Keras, "Knowledge Distillation" (a `Distiller` model with `compute_loss`/`train_step`:
  alpha * student_loss + (1 - alpha) * KL(softmax(teacher / T), softmax(student / T)) * T^2),
  here with the teacher's logits computed once over the training set.

    python -m benchmarks.naive_recipe --out=/tmp/naive.json
    python -m benchmarks.naive_recipe --train_examples=512 --epochs_scale=0.1   # smoke run
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot 0.8 needs Keras 2 (tf_keras)

import gzip
import json
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_model_optimization as tfmot
import tf_keras as keras

try:
  from ai_edge_litert.interpreter import Interpreter
except ImportError:  # LiteRT not installed: TF's own (deprecated) interpreter.
  Interpreter = tf.lite.Interpreter

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/tfds",
                    "TFDS data_dir holding a prepared `mnist`; relative paths are taken from the "
                    "repository root.")
flags.DEFINE_string("out", None, "Write the figures as JSON to this file.")
flags.DEFINE_string("workdir", None, "Folder for the .tflite files (default: a new temp dir).")
flags.DEFINE_integer("seed", 42, "tf_keras.utils.set_random_seed.")
flags.DEFINE_integer("train_examples", 0, "Use only the first N training images (0 = all).")
flags.DEFINE_float("epochs_scale", 1.0,
                   "Multiplies every epoch count (floor of 1 epoch), for smoke runs.")

BATCH_SIZE = 128
TEACHER_EPOCHS = 6
STUDENT_EPOCHS = 10
PQAT_EPOCHS = 2
TEMPERATURE = 4.0
ALPHA = 0.1
INITIAL_SPARSITY = 0.50  # as in the pruning tutorial
FINAL_SPARSITY = 0.90
EVAL_BATCH = 256


def epochs(n):
  return max(1, int(round(n * FLAGS.epochs_scale)))


def load_mnist(data_dir, train_examples=0):
  train_split = f"train[:{train_examples}]" if train_examples else "train"
  (x_train, y_train), (x_test, y_test) = tfds.as_numpy(tfds.load(
      "mnist", split=[train_split, "test"], data_dir=data_dir, batch_size=-1,
      as_supervised=True, download=False))
  x_train = (x_train.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
  x_test = (x_test.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
  return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


def make_teacher():
  return keras.Sequential([
      keras.layers.InputLayer(input_shape=(28, 28, 1)),
      keras.layers.Conv2D(32, 3, activation="relu"),
      keras.layers.Conv2D(64, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Dropout(0.25),
      keras.layers.Flatten(),
      keras.layers.Dense(128, activation="relu"),
      keras.layers.Dropout(0.5),
      keras.layers.Dense(10),
  ], name="teacher")


def make_student():
  return keras.Sequential([
      keras.layers.InputLayer(input_shape=(28, 28, 1)),
      keras.layers.Conv2D(16, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(32, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(10),
  ], name="student")


class Distiller(keras.Model):
  """The Keras distillation example's Distiller, fed precomputed teacher logits.

  Batches are (x, y, teacher_logits); the teacher itself is not held.
  """

  def __init__(self, student):
    super().__init__()
    self.student = student
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

  def compile(self, optimizer, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3.0):
    super().compile(optimizer=optimizer)
    self.student_loss_fn = student_loss_fn
    self.distillation_loss_fn = distillation_loss_fn
    self.alpha = alpha
    self.temperature = temperature

  @property
  def metrics(self):
    return [self.loss_tracker, self.accuracy]

  def call(self, x, training=False):
    return self.student(x, training=training)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, teacher_pred=None):
    student_loss = self.student_loss_fn(y, y_pred)
    distillation_loss = self.distillation_loss_fn(
        tf.nn.softmax(teacher_pred / self.temperature, axis=1),
        tf.nn.softmax(y_pred / self.temperature, axis=1)) * self.temperature**2
    return self.alpha * student_loss + (1 - self.alpha) * distillation_loss

  def train_step(self, data):
    x, y, teacher_pred = data
    with tf.GradientTape() as tape:
      y_pred = self.student(x, training=True)
      loss = self.compute_loss(x, y, y_pred, teacher_pred=teacher_pred)
    variables = self.student.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    self.loss_tracker.update_state(loss)
    self.accuracy.update_state(y, y_pred)
    return {m.name: m.result() for m in self.metrics}


def convert_int8(qat_model):
  converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return converter.convert()


def convert_float(model):
  return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tflite_accuracy(model_content, x, y):
  """Accuracy over (x, y) with the TFLite interpreter, batch EVAL_BATCH if resizable."""
  interpreter = Interpreter(model_content=model_content)
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  batch = EVAL_BATCH
  try:
    interpreter.resize_tensor_input(inp["index"], [batch, 28, 28, 1])
    interpreter.allocate_tensors()
  except Exception:  # pylint: disable=broad-except
    interpreter = Interpreter(model_content=model_content)
    interpreter.allocate_tensors()
    batch = 1
  in_scale, in_zero = inp["quantization"]
  correct = 0
  for start in range(0, len(x), batch):
    xb = x[start:start + batch]
    n = len(xb)
    if n < batch:  # pad the last batch, drop the padding's predictions
      xb = np.concatenate([xb, np.zeros((batch - n,) + xb.shape[1:], xb.dtype)])
    if inp["dtype"] != np.float32:
      xb = np.round(xb / in_scale + in_zero)
      info = np.iinfo(inp["dtype"])
      xb = np.clip(xb, info.min, info.max)
    interpreter.set_tensor(inp["index"], xb.astype(inp["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])[:n]
    correct += int(np.sum(np.argmax(logits, axis=1) == y[start:start + n]))
  return correct / len(x)


def run():
  """The whole recipe with the parsed flags; returns the figures as a dict."""
  t_start = time.perf_counter()
  walls = {}
  keras.utils.set_random_seed(FLAGS.seed)
  data_dir = FLAGS.data_dir
  if not os.path.isabs(data_dir):
    data_dir = os.path.normpath(os.path.join(_REPO_ROOT, data_dir))
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="naive_recipe_")
  os.makedirs(workdir, exist_ok=True)

  t = time.perf_counter()
  (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, FLAGS.train_examples)
  walls["data"] = time.perf_counter() - t

  # 1. Teacher.
  t = time.perf_counter()
  teacher = make_teacher()
  teacher.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
  teacher.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs(TEACHER_EPOCHS), verbose=2)
  walls["teacher"] = time.perf_counter() - t
  _, teacher_keras_accuracy = teacher.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0)

  # 2. Teacher logits, once over the training set.
  t = time.perf_counter()
  teacher_logits = teacher.predict(x_train, batch_size=BATCH_SIZE, verbose=0)
  walls["teacher_logits"] = time.perf_counter() - t

  # 3. Student: pruning during distillation.
  t = time.perf_counter()
  student_epochs = epochs(STUDENT_EPOCHS)
  end_step = int(np.ceil(len(x_train) / BATCH_SIZE)) * student_epochs
  pruning_params = {
      "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
          initial_sparsity=INITIAL_SPARSITY, final_sparsity=FINAL_SPARSITY,
          begin_step=0, end_step=end_step)
  }
  pruned_student = tfmot.sparsity.keras.prune_low_magnitude(make_student(), **pruning_params)
  distiller = Distiller(pruned_student)
  distiller.compile(optimizer=keras.optimizers.Adam(),
                    student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    distillation_loss_fn=keras.losses.KLDivergence(),
                    alpha=ALPHA, temperature=TEMPERATURE)
  train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train, teacher_logits))
              .shuffle(len(x_train), seed=FLAGS.seed).batch(BATCH_SIZE)
              .prefetch(tf.data.AUTOTUNE))
  distiller.fit(train_ds, epochs=student_epochs, verbose=2,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  student = tfmot.sparsity.keras.strip_pruning(pruned_student)
  walls["student"] = time.perf_counter() - t

  # 4. PQAT, fine-tuned on hard labels.
  t = time.perf_counter()
  annotated = tfmot.quantization.keras.quantize_annotate_model(student)
  pqat_model = tfmot.quantization.keras.quantize_apply(
      annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
  pqat_model.compile(optimizer="adam",
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
  pqat_model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs(PQAT_EPOCHS), verbose=2)
  walls["pqat"] = time.perf_counter() - t

  # 5. Conversion: int8 student, float teacher.
  t = time.perf_counter()
  int8_model = convert_int8(pqat_model)
  float_teacher = convert_float(teacher)
  walls["conversion"] = time.perf_counter() - t
  int8_path = os.path.join(workdir, "student_int8.tflite")
  teacher_path = os.path.join(workdir, "teacher_float.tflite")
  for path, content in ((int8_path, int8_model), (teacher_path, float_teacher)):
    with open(path, "wb") as f:
      f.write(content)

  # 6. Evaluation on the 10,000 test images with the TFLite interpreter.
  t = time.perf_counter()
  student_accuracy = tflite_accuracy(int8_model, x_test, y_test)
  teacher_accuracy = tflite_accuracy(float_teacher, x_test, y_test)
  walls["evaluation"] = time.perf_counter() - t
  walls["total"] = time.perf_counter() - t_start

  int8_gzip = len(gzip.compress(int8_model, compresslevel=9))
  teacher_gzip = len(gzip.compress(float_teacher, compresslevel=9))
  results = {
      "wall_s": {k: round(v, 1) for k, v in walls.items()},
      "teacher_float_accuracy": teacher_accuracy,
      "teacher_keras_accuracy": float(teacher_keras_accuracy),
      "student_int8_accuracy": student_accuracy,
      "student_int8_bytes": len(int8_model),
      "student_int8_gzip_bytes": int8_gzip,
      "teacher_float_bytes": len(float_teacher),
      "teacher_float_gzip_bytes": teacher_gzip,
      "gzip_ratio_teacher_over_student": round(teacher_gzip / int8_gzip, 2),
      "train_examples": len(x_train),
      "test_examples": len(x_test),
      "epochs": {"teacher": epochs(TEACHER_EPOCHS), "student": student_epochs,
                 "pqat": epochs(PQAT_EPOCHS)},
      "seed": FLAGS.seed,
      "workdir": workdir,
      "interpreter": f"{Interpreter.__module__}.{Interpreter.__name__}",
  }
  print(json.dumps(results, indent=2))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)
      f.write("\n")
  return results


def main(argv):
  del argv
  run()


def smoke():
  """Pytest-free smoke run: 512 training images, one epoch per phase (well under a minute idle)."""
  FLAGS(["naive_recipe", "--train_examples=512", "--epochs_scale=0.1"])
  results = run()
  assert results["student_int8_bytes"] > 0 and 0.0 <= results["student_int8_accuracy"] <= 1.0
  return results


if __name__ == "__main__":
  app.run(main)
