"""Keras 3 students: built families, the user's model file, pruning with tfmot's semantics
(pipelines/prune/keras3.py), and the whole flow student -> qat (ptq) -> export."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models import keras3 as keras3_models
from models.compat import keras, tf
from models.registry import build_model
from models.spec import ModelSpec
from pipelines.config import PruningConfig
from pipelines.config.errors import ConfigError
from pipelines.export import tflite
from pipelines.prune import backend as prune_backend
from pipelines.prune import keras3 as prune_keras3
from pipelines.prune import magnitude
from pipelines.runtime import execute
from pipelines.stages import export, qat, student, teacher
from tests.conftest import (
  REPO,
  tiny_export_config,
  tiny_qat_config,
  tiny_student_config,
  tiny_teacher_config,
)

K3 = keras3_models.keras3()


@pytest.mark.parametrize("family", ["mlp", "cnn", "lenet", "tinycnn", "resnet"])
def test_each_family_builds_with_keras3_like_its_tf_keras_self(family):
  spec = ModelSpec(family, width=4, depth=1)
  two = build_model(spec, (8, 8, 1), 10)
  three = keras3_models.build_family(spec, (8, 8, 1), 10)
  assert keras3_models.is_keras3(three) and not keras3_models.is_keras3(two)
  assert [l.name for l in three.layers if l.weights] == [l.name for l in two.layers if l.weights]
  assert three.count_params() == two.count_params()
  assert prune_backend.for_model(three).name == "keras3"
  assert prune_backend.for_model(two).name == "tfmot"


@pytest.mark.parametrize("schedule", ["polynomial_decay", "constant"])
def test_the_keras3_backend_updates_masks_like_tfmot_step_by_step(schedule):
  """The same kernel pruned by tfmot's wrapper and by the Keras 3 backend: after each training
  call, the same pruning step and the same mask (so the same sparsity at each update step), with
  the same noise added to both kernels between steps so that the masks move."""
  config = PruningConfig(schedule=schedule, final_sparsity=0.75, initial_sparsity=0.1,
                         begin="2", end="14", frequency=3)
  steps = config.resolve_steps(10, 2)
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(32, 24)).astype(np.float32)
  two = keras.Sequential([keras.Input((32,)), keras.layers.Dense(24, name="dense")])
  two.set_weights([kernel, np.zeros(24, np.float32)])
  pruned_two, _ = magnitude.apply_pruning(two, config, steps)
  wrapper = magnitude.pruned_layers(pruned_two)[0]
  wrapper.pruning_step.assign(0)  # tfmot's UpdatePruningStep.on_train_begin
  three = K3.Sequential([K3.Input((32,)), K3.layers.Dense(24, name="dense")])
  three.set_weights([kernel, np.zeros(24, np.float32)])
  pruned_three, plan = prune_keras3.wrap(three, config, steps)
  assert plan == {"dense": "prune"}
  state = prune_keras3.state_of(pruned_three)
  x = np.zeros((1, 32), np.float32)
  seen, masks = [], set()
  for _ in range(18):
    pruned_two(x, training=True)
    state.before_step()
    mask_two = wrapper.pruning_vars[0][1].numpy()
    mask_three = state.masks[0].numpy()
    assert state.step() == magnitude.pruning_step(pruned_two)
    np.testing.assert_array_equal(mask_three, mask_two)
    np.testing.assert_array_equal(three.layers[0].kernel.numpy(),
                                  wrapper.layer.kernel.numpy())
    seen.append(round(1 - mask_three.mean(), 4))
    masks.add(mask_three.tobytes())
    noise = rng.normal(scale=0.3, size=kernel.shape).astype(np.float32)
    wrapper.layer.kernel.assign(wrapper.layer.kernel + noise)
    three.layers[0].kernel.assign(three.layers[0].kernel + noise)
  assert seen[0] == 0.0 and seen[-1] == 0.75  # nothing before begin, the target after end
  assert len(set(seen)) > (1 if schedule == "constant" else 4)  # sparsities on the grid
  assert len(masks) >= (2 if schedule == "constant" else 5)  # the masks moved on the grid
  stripped = prune_keras3.strip(pruned_three)
  report = prune_keras3.sparsity_report(stripped, plan, targets={"dense": 0.75})
  assert report["layers"]["dense"]["sparsity"] == 0.75 and report["target"] == 0.75


def _keras3_student(**overrides):
  return dataclasses.replace(tiny_student_config(**overrides), keras=3)


@pytest.mark.slow
def test_a_keras3_student_runs_student_qat_export_with_int8_and_zeros_in_the_file(tmp_path):
  workdir = str(tmp_path)
  execute.run_stage(teacher.STAGE, tiny_teacher_config(), workdir, log=lambda *_: None)
  s = execute.run_stage(student.STAGE, _keras3_student(), workdir, log=lambda *_: None).entry
  assert s["metrics"]["pruning_backend"] == "keras3"
  assert abs(s["metrics"]["sparsity"] - 0.8) <= 0.005
  assert s["metrics"]["test_accuracy"] > 0.3
  assert keras3_models.is_keras3_file(os.path.join(workdir, s["artifacts"]["model"]))
  with open(os.path.join(workdir, "student", "default", "metrics.jsonl")) as f:
    logged = json.loads(f.readline())
  for name in ("loss", "distill_loss", "hard_loss", "accuracy", "agreement", "teacher_kl",
               "val_loss", "val_accuracy", "learning_rate"):
    assert name in logged, (name, sorted(logged))
  q = execute.run_stage(qat.STAGE, tiny_qat_config(), workdir, log=lambda *_: None).entry
  assert q["metrics"]["scheme"] == "ptq"
  assert q["metrics"]["sparsity"] == s["metrics"]["sparsity"]
  e = execute.run_stage(export.STAGE, tiny_export_config(), workdir, log=lambda *_: None).entry
  with open(os.path.join(workdir, e["artifacts"]["model"]), "rb") as f:
    data = f.read()
  assert tflite.inspect_ops(data)["integer_only"]
  weights = tflite.inspect_weights(data)
  assert weights["sparsity"] > 0.7
  assert e["metrics"]["test_accuracy"] > s["metrics"]["test_accuracy"] - 0.05
  with open(os.path.join(workdir, e["artifacts"]["report"])) as f:
    story = json.load(f)["story"]
  assert any("no QAT" in entry["measured_on"] for entry in story)


@pytest.mark.parametrize("overrides,fragment", [
    (dict(method="dynamic"), "--pruning_method=dynamic is not built for Keras 3 students"),
    (dict(structure="m_by_n", final_sparsity=0.5), "--pruning_structure=m_by_n is not built"),
])
def test_what_keras3_students_lack_is_refused_in_one_line(overrides, fragment):
  with pytest.raises(ConfigError, match=fragment) as e:
    _keras3_student(**overrides).validate()
  assert "\n" not in str(e.value)


def _user_student(path, classes=10, softmax=True):
  """A Keras 3 student with BatchNorm, a depthwise block, global pooling and a nested model."""
  inputs = K3.Input((8, 8, 1))
  x = K3.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
  x = K3.layers.BatchNormalization(name="stem_bn")(x)
  x = K3.layers.ReLU()(x)
  block_in = K3.Input((8, 8, 8))
  y = K3.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(block_in)
  y = K3.layers.BatchNormalization(name="dw_bn")(y)
  y = K3.layers.Conv2D(16, 1, use_bias=False, name="pw")(y)
  y = K3.layers.ReLU()(y)
  x = K3.Model(block_in, y, name="block")(x)
  x = K3.layers.GlobalAveragePooling2D()(x)
  outputs = K3.layers.Dense(classes, activation="softmax" if softmax else None, name="head")(x)
  K3.Model(inputs, outputs, name="mine").save(path)
  return path


def test_a_keras3_student_file_is_flattened_and_its_softmax_removed(tmp_path):
  path = _user_student(str(tmp_path / "mine.keras"))
  assert keras3_models.is_keras3_file(path)
  model = keras3_models.load_student(path, (8, 8, 1), 10)
  assert "block" not in [l.name for l in model.layers]
  assert {"stem", "dw", "pw", "head"} <= {l.name for l in model.layers}
  assert model.get_layer("head").activation is K3.activations.linear
  plan = prune_keras3.plan_layers(model, PruningConfig(final_sparsity=0.8, keep_dense=("",)))
  assert plan["stem"] == plan["pw"] == plan["head"] == "prune"
  assert plan["dw"] == "no prunable weights"  # tfmot does not prune depthwise kernels either
  x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(tf.nn.softmax(model(x)).numpy(),
                             K3.models.load_model(path)(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_a_student_file_that_does_not_fit_the_data_is_refused_in_one_line(tmp_path):
  path = _user_student(str(tmp_path / "three.keras"), classes=3)
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.cli.student", "--workdir=%s" % (tmp_path / "run"),
       "--dataset=digits", "--student_path=%s" % path, "--nodistill"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, result.stderr
  assert len(lines) == 1 and "--student_path=%s gives outputs of shape (3,)" % path in lines[0]
  assert "10 classes" in lines[0]
  assert not os.path.exists(tmp_path / "run" / "student")


def test_a_tf_keras_student_file_goes_through_tfmot(tmp_path):
  path = str(tmp_path / "mine_tf.keras")
  build_model(ModelSpec("mlp", width=32, depth=1), (8, 8, 1), 10).save(path)
  assert not keras3_models.is_keras3_file(path)
  config = dataclasses.replace(tiny_student_config(distill=False), path=path)
  assert not config.keras3 and config.resolved()["path"] == path
  s = execute.run_stage(student.STAGE, config, str(tmp_path / "run"), log=lambda *_: None).entry
  assert "pruning_backend" not in s["metrics"]  # tfmot's, as for a built student
  assert abs(s["metrics"]["sparsity"] - 0.8) <= 0.005
  with pytest.raises(ConfigError, match="is a tf_keras model file, not Keras 3"):
    dataclasses.replace(config, keras=3).validate()
