"""Feature hints (--feature_distill), mixup (--mixup) and several imported teachers
(--teacher_path repeated): units, checks before work, and tiny end-to-end runs on digits."""

import dataclasses
import json

import numpy as np
import pytest

from models.compat import keras, tf
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.runtime import execute as stage
from pipelines.stages import export, qat, student, teacher
from pipelines.train import distill, losses, mixup
from tests.conftest import (tiny_export_config, tiny_qat_config, tiny_student_config,
                            tiny_teacher_config)

DIGITS = data.DataConfig(dataset="digits")


def _quiet(*_):
  pass


def _with_distill(config, **changes):
  return dataclasses.replace(config, distill=dataclasses.replace(config.distill, **changes))


def _run(config, module, workdir):
  return stage.execute(config.stage, module.run, config, str(workdir),
                       module.fingerprint_inputs(config, str(workdir)), log=_quiet)


# -- units -----------------------------------------------------------------------------------


def test_mixed_rows_are_convex_combinations_and_label_weights_sum_to_one():
  rng = np.random.default_rng(0)
  x = tf.constant(rng.random((16, 8, 8, 1)), tf.float32)
  y = tf.constant(rng.integers(0, 10, 16), tf.int64)
  mixed, a, b, lam = mixup.mixed_batch(x, y, 0.4, tf.constant(7, tf.int64))
  lam = float(lam)
  assert 0.0 <= lam <= 1.0 and lam + (1.0 - lam) == pytest.approx(1.0)
  np.testing.assert_array_equal(a.numpy(), y.numpy())
  # Each row is lam * its own row + (1 - lam) * the row its second label came from.
  perm = mixup.draw(0.4, 16, tf.constant(7, tf.int64))[1].numpy()
  assert sorted(perm) == list(range(16))
  np.testing.assert_allclose(mixed.numpy(), lam * x.numpy() + (1 - lam) * x.numpy()[perm],
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(b.numpy(), y.numpy()[perm])
  # Another step, another mix; the same step, the same one.
  assert float(mixup.draw(0.4, 16, tf.constant(8, tf.int64))[0]) != lam
  assert float(mixup.draw(0.4, 16, tf.constant(7, tf.int64))[0]) == lam
  # The hard loss of the mixed labels: lam-weighted cross-entropies.
  logits = tf.constant(rng.normal(size=(16, 10)), tf.float32)
  got = losses.mixed_cross_entropy_per_example(a, b, lam, logits).numpy()
  want = lam * losses.hard_cross_entropy_per_example(a, logits).numpy() + (
      1 - lam) * losses.hard_cross_entropy_per_example(b, logits).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_averaged_teachers_soften_to_the_mean_probability():
  rng = np.random.default_rng(1)
  z1, z2 = (tf.constant(rng.normal(size=(5, 10)) * 3, tf.float32) for _ in range(2))
  for t in (1.0, 4.0):
    avg = losses.averaged_teacher_logits([z1, z2], t)
    want = (tf.nn.softmax(z1 / t) + tf.nn.softmax(z2 / t)).numpy() / 2
    np.testing.assert_allclose(tf.nn.softmax(avg / t).numpy(), want, rtol=1e-5, atol=1e-7)
  one = losses.averaged_teacher_logits([z1], 2.0)  # one teacher: its own distribution
  np.testing.assert_allclose(tf.nn.softmax(one / 2).numpy(), tf.nn.softmax(z1 / 2).numpy(),
                             rtol=1e-5, atol=1e-7)


def test_feature_distill_flags_parse_and_are_checked_without_tensorflow():
  assert configs.parse_feature_distill(["relu_1:relu_1", "dense_1:dense_1:0.5,a:b:2"]) == (
      ("relu_1", "relu_1", 1.0), ("dense_1", "dense_1", 0.5), ("a", "b", 2.0))
  for bad in ("relu_1", "a:b:c", ":b", "a:b:1:2"):
    with pytest.raises(ConfigError, match="TEACHER_LAYER:STUDENT_LAYER"):
      configs.parse_feature_distill([bad])
  hint = (("relu_1", "relu_1", 1.0),)
  d = configs.DistillConfig
  assert d(feature_distill=hint).resolved_teacher_outputs() == "online"
  assert d(mixup=0.2).resolved_teacher_outputs() == "online"
  assert d().resolved_teacher_outputs() == "cached"
  for config, message in (
      (d(feature_distill=hint, teacher_outputs="cached"), "feature maps are not cached"),
      (d(mixup=0.2, teacher_outputs="cached"), "must see the mixed batch"),
      (d(mixup=-1.0), "--mixup=-1.0 must be >= 0"),
      (d(feature_distill=(("a", "b", 0.0),)), "the weight must be > 0"),
      (d(feature_distill=hint, enabled=False), "needs a teacher")):
    with pytest.raises(ConfigError, match=message):
      config.validate()
  with pytest.raises(ConfigError, match="--mixup=0.2 is for classification"):
    d(mixup=0.2).check_task("regression")
  # Unused, the new fields leave the resolved config (and so every fingerprint) as it was.
  assert "feature_distill" not in d().resolved_for("classification")
  assert "mixup" not in d().resolved_for("classification")
  assert d(feature_distill=hint).resolved_for("classification")["feature_distill"] == [
      ["relu_1", "relu_1", 1.0]]
  plain = tiny_student_config()
  assert "mixup" not in plain.resolved()["distill"]
  hard = _with_distill(tiny_student_config(distill=False), mixup=0.2)
  assert hard.resolved()["distill"] == {"enabled": False, "mixup": 0.2}


# -- feature hints and mixup through the stages ---------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("hints")
  config = tiny_teacher_config(epochs=3)  # mlp width 32: flatten, dense_1, relu_1, logits
  stage.execute("teacher", teacher.run, config, str(workdir), teacher.fingerprint_inputs(config),
                log=_quiet)
  return workdir


@pytest.mark.parametrize("hint, role, name", [
    (("relu_9", "relu_1", 1.0), "teacher", "relu_9"),
    (("relu_1", "conv_1", 1.0), "student", "conv_1")])
def test_a_bad_layer_name_is_refused_in_one_line_before_work(teacher_run, hint, role, name):
  config = _with_distill(tiny_student_config(name="bad"), feature_distill=(hint,))
  with pytest.raises(ConfigError) as e:
    student.validate(config)
    student.check_upstream(config, str(teacher_run))
  message = str(e.value)
  assert "\n" not in message
  assert "the %s has no layer %r; its layers: flatten, dense_1, relu_1, logits" % (
      role, name) in message
  assert not (teacher_run / "student" / "bad").exists()


def test_a_bad_layer_name_of_a_built_model_is_refused_with_the_candidates():
  from pipelines.train import features  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((4,))
  model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(
      keras.layers.Dense(5, name="hidden")(inputs)))
  with pytest.raises(ConfigError, match=r"the teacher has no layer 'nope'; its layers: hidden, "
                                        r"logits$"):
    features.check_names(model, ["hidden", "nope"], "teacher")


@pytest.mark.slow
def test_feature_hints_train_and_leave_no_projection_in_the_student_or_the_tflite(teacher_run):
  workdir = teacher_run
  hint = (("relu_1", "relu_1", 1.0),)  # teacher 32 units, student 64: a 64 -> 32 projection
  s_config = _with_distill(tiny_student_config(name="hints", epochs=4), feature_distill=hint)
  outcome = _run(s_config, student, workdir)
  assert outcome.entry["metrics"]["teacher_outputs"] == "online"
  epochs = [json.loads(l) for l in
            (workdir / "student" / "hints" / "metrics.jsonl").read_text().splitlines()]
  assert epochs[-1]["feature_loss"] < epochs[0]["feature_loss"]
  assert outcome.entry["config"]["config"]["distill"]["feature_distill"] == [
      ["relu_1", "relu_1", 1.0]]
  saved = distill.load_keras_model(str(workdir / "student" / "hints" / "model.keras"))
  plain = distill.build_student(s_config, data.load(DIGITS))
  assert [l.name for l in saved.layers] == [l.name for l in plain.layers]
  assert saved.count_params() == plain.count_params()
  assert not any("hint" in v.name for v in saved.variables)
  q_config = _with_distill(tiny_qat_config(name="hints"), feature_distill=hint)
  q = _run(q_config, qat, workdir)
  q_epochs = [json.loads(l) for l in
              (workdir / "qat" / "hints" / "metrics.jsonl").read_text().splitlines()]
  assert "feature_loss" in q_epochs[0] and q.entry["metrics"]["teacher_outputs"] == "online"
  _run(tiny_export_config(name="hints"), export, workdir)
  path = workdir / "export" / "hints" / "student_qat_int8.tflite"
  interpreter = tf.lite.Interpreter(model_path=str(path))
  names = [t["name"] for t in interpreter.get_tensor_details()]
  assert names and not any("hint" in n for n in names)
  shapes = [tuple(t["shape"]) for t in interpreter.get_tensor_details()]
  assert (32, 64) not in shapes and (64, 32) not in shapes  # no projection kernel


def test_mixup_trains_a_student_end_to_end(teacher_run):
  config = _with_distill(tiny_student_config(name="mixup", epochs=4), mixup=0.4)
  outcome = _run(config, student, teacher_run)
  metrics = outcome.entry["metrics"]
  assert metrics["teacher_outputs"] == "online"
  assert metrics["test_accuracy"] > 0.3  # chance: 0.1
  assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)
  assert outcome.entry["config"]["config"]["distill"]["mixup"] == 0.4


def test_mixup_changes_the_batch_both_models_see():
  """The teacher is run on what the student is run on: the mixed batch."""
  seen = {}

  class Spy(keras.layers.Layer):
    def __init__(self, key, **kwargs):
      super().__init__(**kwargs)
      self.key = key

    def call(self, x):
      seen[self.key] = x
      return x

  def model(key, name):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(Spy(key)(inputs)), name=name)

  trainer = distill.DistillationTrainer(model("student", "student"),
                                        teacher=model("teacher", "teacher"), mixup=1.0)
  trainer.compile(optimizer=keras.optimizers.SGD(0.0))
  trainer.run_eagerly = True
  trainer._run_teacher = lambda x: trainer.teacher(x, training=False)  # eager: no tf.function
  x = np.arange(32, dtype=np.float32).reshape(8, 4)
  trainer.train_step((tf.constant(x), tf.constant(np.arange(8) % 3)))
  np.testing.assert_array_equal(seen["student"].numpy(), seen["teacher"].numpy())
  assert not np.allclose(seen["student"].numpy(), x)


# -- several imported teachers ----------------------------------------------------------------


def _arrays(split):
  bundle = data.load(DIGITS)
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.batches(split, 256)])
  return np.concatenate(xs), np.concatenate(ys)


def _teacher_file(path, seed, units=32, epochs=8):
  x, y = _arrays("train")
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10)])
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
  model.save(path)
  return model


def _import(paths, workdir):
  config = dataclasses.replace(teacher.TeacherConfig(data=DIGITS, progress="none"),
                               path=paths[0], more_paths=tuple(paths[1:]))
  return stage.execute("teacher", teacher.run, config, str(workdir),
                       teacher.fingerprint_inputs(config), log=_quiet)


@pytest.mark.slow
def test_two_imported_teachers_are_averaged_recorded_and_a_changed_one_reruns_students(tmp_path):
  paths = [str(tmp_path / "a.keras"), str(tmp_path / "b.keras")]
  a, b = _teacher_file(paths[0], 0), _teacher_file(paths[1], 1, units=48)
  workdir = tmp_path / "run"
  first = _import(paths, workdir)
  metrics = first.entry["metrics"]
  assert [t["path"] for t in metrics["teachers"]] == paths
  record = json.loads((workdir / "teacher" / "import.json").read_text())
  assert [t["sha256"] for t in record["teachers"]] == [
      t["sha256"] for t in metrics["teachers"]]
  # The stage measured the average of the probabilities (T = 1).
  x, y = _arrays("test")
  mean = (tf.nn.softmax(a(x)) + tf.nn.softmax(b(x))).numpy() / 2
  assert metrics["test_accuracy"] == pytest.approx(float(np.mean(np.argmax(mean, -1) == y)))
  # The students learn from the average at their T.
  loaded = distill.load_teacher(str(workdir), data.load(DIGITS), "digits", temperature=4.0)
  want = (tf.nn.softmax(a(x[:16]) / 4) + tf.nn.softmax(b(x[:16]) / 4)).numpy() / 2
  np.testing.assert_allclose(tf.nn.softmax(loaded(x[:16]) / 4).numpy(), want, rtol=1e-4,
                             atol=1e-6)
  config = tiny_student_config(epochs=3)
  done = _run(config, student, workdir)
  assert done.ran and done.entry["metrics"]["test_accuracy"] > 0.3
  assert _run(config, student, workdir).ran is False  # nothing changed: skipped
  _teacher_file(paths[1], 2, units=48, epochs=2)  # the second teacher's file changes
  second = _import(paths, workdir)
  assert second.ran and second.entry["fingerprint"] != first.entry["fingerprint"]
  assert _run(config, student, workdir).ran  # and its students rerun


def test_several_teacher_paths_parse_from_the_command_line(tmp_path):
  from tests.test_cli import _assert_one_line_error  # pylint: disable=g-import-not-at-top
  from tests.test_cli import _run as run_cli  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "a.keras")
  with open(path, "wb"):
    pass
  result = run_cli("--workdir=%s" % (tmp_path / "run"), "--teacher_path=%s" % path,
                   "--teacher_path=%s" % path)
  _assert_one_line_error(result, "kdprune-teacher", "--teacher_path names one file twice")
  assert not (tmp_path / "run").exists()


def test_feature_maps_of_other_sizes_are_pooled_to_the_smaller():
  from pipelines.train import features  # pylint: disable=g-import-not-at-top
  x8 = tf.constant(np.random.default_rng(2).random((2, 8, 8, 3)), tf.float32)
  s, t = features.match(x8, tf.zeros((2, 4, 4, 3)))
  assert s.shape == (2, 4, 4, 3) and t.shape == (2, 4, 4, 3)
  np.testing.assert_allclose(s.numpy()[0, 0, 0], x8.numpy()[0, :2, :2].mean(axis=(0, 1)),
                             rtol=1e-6)
  s, t = features.match(tf.zeros((2, 4, 4, 3)), tf.zeros((2, 6, 6, 3)))  # 6 -> 4: a resize
  assert t.shape == (2, 4, 4, 3)
  s, t = features.match(x8, tf.zeros((2, 3)))  # a map against a flat output: its mean
  np.testing.assert_allclose(s.numpy(), x8.numpy().mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("name, shape", [("mlp", (8, 8, 1)), ("mlp", (12,)), ("cnn", (8, 8, 1)),
                                         ("lenet", (28, 28, 1)), ("tinycnn", (28, 28, 1))])
def test_layer_names_without_tensorflow_are_the_built_models(name, shape):
  from models.registry import build_model  # pylint: disable=g-import-not-at-top
  from models.spec import ModelSpec, layer_names  # pylint: disable=g-import-not-at-top
  for spec in (ModelSpec(name, width=4, depth=2), ModelSpec(name, width=4, depth=1, dropout=0.1)):
    if name != "mlp" and len(shape) != 3:
      continue
    model = build_model(spec, shape, 10)
    assert layer_names(spec, shape) == [l.name for l in model.layers[1:]]
