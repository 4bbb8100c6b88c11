"""--teacher_path: a teacher trained outside kdprune (tf_keras .keras/.h5, Keras 3 .keras,
SavedModel) is imported, evaluated like a trained one, and distilled into a pruned student."""

import dataclasses
import json
import os

import numpy as np
import pytest

from models.compat import keras, tf
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.runtime import execute as stage
from pipelines.stages import export, qat, student, teacher
from tests.conftest import tiny_export_config, tiny_qat_config, tiny_student_config
from tests.test_cli import _assert_one_line_error, _run

DIGITS = data.DataConfig(dataset="digits")


def _quiet(*_):
  pass


def _arrays(split):
  bundle = data.load(DIGITS)
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.batches(split, 256)])
  return np.concatenate(xs), np.concatenate(ys)


def _tf_keras_teacher(softmax=False):
  x, y = _arrays("train")
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(10, activation="softmax" if softmax else None)])
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
  model.fit(x, y, epochs=15, batch_size=64, verbose=0)
  return model


def _keras3_teacher(path):
  import keras as keras3  # pylint: disable=g-import-not-at-top
  x, y = _arrays("train")
  keras3.utils.set_random_seed(0)
  model = keras3.Sequential([
      keras3.layers.Input((8, 8, 1)), keras3.layers.Flatten(),
      keras3.layers.Dense(64, activation="relu"), keras3.layers.Dense(10)])
  model.compile("adam", keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, epochs=15, batch_size=64, verbose=0)
  model.save(path)
  return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("teachers")
  model = _tf_keras_teacher()
  out = {"tf_keras": str(root / "teacher.keras"), "h5": str(root / "teacher.h5"),
         "savedmodel": str(root / "saved"), "keras3": str(root / "keras3.keras")}
  model.save(out["tf_keras"])
  model.save(out["h5"])
  tf.saved_model.save(model, out["savedmodel"])
  k3 = _keras3_teacher(out["keras3"])
  soft = _tf_keras_teacher(softmax=True)
  out["softmax"] = str(root / "softmax.keras")
  soft.save(out["softmax"])
  x, y = _arrays("test")
  out["independent"] = {
      "tf_keras": float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)),
      "keras3": float(np.mean(np.argmax(np.asarray(k3(x, training=False)), -1) == y)),
  }
  return out


def _import(path, workdir, **kw):
  config = dataclasses.replace(teacher.TeacherConfig(data=DIGITS, progress="none"), path=path,
                               **kw)
  return stage.execute("teacher", teacher.run, config, workdir,
                       teacher.fingerprint_inputs(config), log=_quiet)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tf_keras", "h5", "savedmodel", "keras3"])
def test_imported_teacher_is_evaluated_like_a_trained_one(files, kind, tmp_path):
  outcome = _import(files[kind], str(tmp_path))
  metrics = outcome.entry["metrics"]
  assert metrics["imported"] and metrics["outputs_are"] == "logits"
  independent = files["independent"]["keras3" if kind == "keras3" else "tf_keras"]
  assert metrics["test_accuracy"] == pytest.approx(independent, abs=1e-9)
  assert metrics["test_accuracy"] > 0.85
  with open(tmp_path / "teacher" / "metrics.json") as f:
    assert json.load(f)["data"]["input_shape"] == [8, 8, 1]
  assert os.listdir(tmp_path / "teacher" / "tb")  # HParams session like a trained teacher


@pytest.mark.slow
def test_keras3_teacher_distils_online_and_savedmodel_cached_through_export(files, tmp_path):
  # Keras 3 teacher, online outputs (augmented student inputs): a pruned student.
  workdir = str(tmp_path / "k3")
  _import(files["keras3"], workdir)
  base = tiny_student_config(epochs=3)
  online = dataclasses.replace(base, train=dataclasses.replace(base.train, augment="shift"))
  out = stage.execute(online.stage, student.run, online, workdir,
                      student.fingerprint_inputs(online, workdir), log=_quiet)
  assert out.entry["metrics"]["teacher_outputs"] == "online"
  assert out.entry["metrics"]["sparsity"] > 0.7
  # SavedModel teacher, cached outputs, through QAT and the int8 export.
  workdir = str(tmp_path / "sm")
  _import(files["savedmodel"], workdir)
  for cfg, mod in ((tiny_student_config(epochs=6), student), (tiny_qat_config(), qat),
                   (tiny_export_config(), export)):
    done = stage.execute(cfg.stage, mod.run, cfg, workdir, mod.fingerprint_inputs(cfg, workdir),
                         log=_quiet)
  assert done.entry["metrics"]["test_accuracy"] > 0.5  # int8, on the file (chance: 0.1)
  with open(tmp_path / "sm" / "export" / "default" / "report.json") as f:
    names = {m["name"] for m in json.load(f)["models"]}
  assert "teacher_float" in names  # the imported teacher is the report's reference


def test_changed_teacher_file_reruns_the_teacher_and_its_students(files, tmp_path):
  path = str(tmp_path / "t.keras")
  with open(files["tf_keras"], "rb") as src, open(path, "wb") as dst:
    dst.write(src.read())
  workdir = str(tmp_path / "run")
  first = _import(path, workdir)
  assert _import(path, workdir).ran is False  # same file: skipped
  keras.models.load_model(files["softmax"]).save(path)  # another model, same path
  second = _import(path, workdir)
  assert second.ran and second.entry["fingerprint"] != first.entry["fingerprint"]


def test_probability_outputs_are_detected_and_turned_into_logits(files, tmp_path, capsys):
  outcome = _import(files["softmax"], str(tmp_path))
  assert outcome.entry["metrics"]["outputs_are"] == "probabilities"
  assert "outputs probabilities" in capsys.readouterr().out
  from pipelines.train import distill  # pylint: disable=g-import-not-at-top
  bundle = data.load(DIGITS)
  wrapped = distill.load_teacher(str(tmp_path), bundle, "digits")
  x = bundle.head("test", 8)[0]
  probs = keras.models.load_model(files["softmax"]).predict(x, verbose=0)
  np.testing.assert_allclose(wrapped.predict(x, verbose=0), np.log(np.maximum(probs, 1e-7)),
                             rtol=1e-5, atol=1e-5)


def test_outputs_are_needs_a_teacher_path():
  with pytest.raises(ConfigError, match="--teacher_outputs_are is for an imported teacher"):
    teacher.TeacherConfig(outputs_are="logits").validate()


def _bad_teacher(make, directory):
  if make == "wrong_shape":
    path = str(directory / "mnist_shaped.keras")
    keras.Sequential([keras.layers.Input((28, 28, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(10)]).save(path)
  elif make == "wrong_outputs":
    path = str(directory / "three.keras")
    keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(3)]).save(path)
  elif make == "garbage":
    path = str(directory / "garbage.keras")
    (directory / "garbage.keras").write_bytes(b"not a zip")
  else:
    path = str(directory / "missing.keras")
  return path


_BAD_TEACHERS = [
    ("missing", ["--teacher_path=", "no such file or directory"]),
    ("garbage", ["does not load as a teacher"]),
    ("wrong_shape", ["takes inputs of shape (28, 28, 1)", "--image_size=28,28"]),
    ("wrong_outputs", ["has 3 outputs, but the data has 10 classes"]),
]


@pytest.mark.parametrize("make, fragments", _BAD_TEACHERS)
def test_bad_teacher_files_are_refused_by_the_stages_checks(make, fragments, tmp_path):
  """What the commands run before any work (``teacher.validate``), on each kind of bad file."""
  path = _bad_teacher(make, tmp_path)
  with pytest.raises(ConfigError) as refused:
    teacher.validate(teacher.TeacherConfig(data=DIGITS, path=path))
  message = str(refused.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, message


@pytest.mark.slow
@pytest.mark.parametrize("make", ["missing", "wrong_outputs"])
def test_bad_teacher_files_are_refused_in_one_line_before_work(make, tmp_path):
  """The command line: one line, exit 2, no run directory (a file that needs no TensorFlow to
  refuse, and one that is loaded to be judged; the other kinds are the stage check above)."""
  path = _bad_teacher(make, tmp_path)
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, "--teacher_path=%s" % path,
                module="pipelines.cli.pipeline")
  _assert_one_line_error(result, "kdprune-pipeline", *dict(_BAD_TEACHERS)[make])
  assert not workdir.exists()  # nothing written, nothing trained


def test_bfloat16_probabilities_are_told_from_logits():
  """A bfloat16 softmax sums to 1 only within ~2e-3: it was taken for logits."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from models.compat import tf  # pylint: disable=g-import-not-at-top
  from pipelines.train import teacher_import  # pylint: disable=g-import-not-at-top
  z = np.random.default_rng(0).normal(size=(64, 10)) * 2
  probabilities = tf.cast(tf.nn.softmax(z), tf.bfloat16)
  assert abs(float(tf.reduce_max(tf.abs(tf.reduce_sum(
      tf.cast(probabilities, tf.float64), axis=1) - 1)))) > 1e-3  # the case is real
  assert teacher_import.probabilities_like(probabilities)
  assert teacher_import.probabilities_like(tf.nn.softmax(z))
  assert not teacher_import.probabilities_like(tf.cast(z, tf.bfloat16))


def _code_file(directory, suffix, marker):
  """A model file whose Lambda layer creates ``marker`` when called: tf_keras calls it while it
  rebuilds the model from the file (an .h5 Lambda is unmarshalled bytecode)."""
  marker = str(marker)
  model = keras.Sequential([
      keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
      keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1], name="code"),
      keras.layers.Dense(10)])
  path = str(directory / ("code" + suffix))
  model.save(path)
  os.remove(marker)  # building the model above called the Lambda once
  return path


def test_a_crafted_h5_file_runs_code_when_loaded_and_kdprune_refuses_it(tmp_path):
  marker = tmp_path / "ran"
  path = _code_file(tmp_path, ".h5", marker)
  keras.models.load_model(path, compile=False)  # what a plain load does: the code runs
  assert marker.exists()
  os.remove(marker)
  for flag in ("--teacher_path", "--student_weights", "--student_path"):
    result = _run("--workdir=%s" % (tmp_path / "run"), "%s=%s" % (flag, path),
                  module="pipelines.cli.pipeline")
    _assert_one_line_error(result, "kdprune-pipeline", "%s=%s" % (flag, path),
                           "Lambda code", "--allow_unsafe_deserialization")
    assert not marker.exists()
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_model_file_with_code_loads_only_when_the_user_allows_it(suffix, tmp_path):
  marker = tmp_path / "ran"
  path = _code_file(tmp_path, suffix, marker)
  with pytest.raises(ConfigError, match="holds Python code that runs when the file is loaded"):
    teacher.validate(teacher.TeacherConfig(data=DIGITS, path=path))
  assert not marker.exists()
  teacher.validate(teacher.TeacherConfig(data=DIGITS, path=path, allow_unsafe=True))
  assert marker.exists()  # trusted by the user: loaded, its Lambda rebuilt and called
