"""Keras 3 students: built families, the user's model file, pruning with tfmot's semantics
(pipelines/prune/keras3.py), and the whole flow student -> qat (ptq) -> export."""

import dataclasses
import glob
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


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                                    "efficientnet_b0", "resnet50"])
def test_each_keras_applications_family_builds_from_keras3_like_its_tf_keras_self(family):
  spec = ModelSpec(family, width=None if family == "resnet50" else 0.35)
  three = keras3_models.build_family(spec, (8, 8, 1), 7)
  two = build_model(spec, (8, 8, 1), 7, flag="--student_model")
  assert keras3_models.is_keras3(three) and three.output_shape == (None, 7)
  assert three.count_params() == two.count_params()
  assert len([l for l in three.layers if l.weights]) == len([l for l in two.layers if l.weights])
  kinds = {type(l).__name__ for l in three.layers}
  assert "Resizing" in kinds and "Normalization" not in kinds  # kdprune normalizes the data
  assert not [l.name for l in three.layers if isinstance(l, K3.Model)]  # one flat graph
  assert {l.momentum for l in three.layers
          if isinstance(l, K3.layers.BatchNormalization)} == {0.9}
  assert three.layers[-1].name == "logits" and three.layers[-1].activation is \
      K3.activations.linear


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
    (dict(structure="channels", final_sparsity=0.0),
     "--pruning_structure=channels is not built for Keras 3 students"),
])
def test_what_keras3_students_lack_is_refused_in_one_line(overrides, fragment):
  with pytest.raises(ConfigError, match=fragment) as e:
    _keras3_student(**overrides).validate()
  assert "\n" not in str(e.value)


def test_feature_hints_are_refused_for_keras3_students_in_one_line():
  config = _keras3_student()
  config = dataclasses.replace(config, distill=dataclasses.replace(
      config.distill, feature_distill=(("dense_1", "dense_1", 1.0),)))
  with pytest.raises(ConfigError, match="--feature_distill is not built for Keras 3") as e:
    config.validate()
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides", [dict(method="dynamic"),
                                       dict(structure="m_by_n", final_sparsity=0.5)])
def test_dynamic_and_m_by_n_are_accepted_for_keras3_students(overrides):
  _keras3_student(**overrides).validate()


def test_mixup_is_accepted_for_keras3_students():
  config = _keras3_student()
  dataclasses.replace(config, distill=dataclasses.replace(config.distill, mixup=0.2)).validate()


# -- m:n ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 8), (3, 3, 8, 6), (1, 1, 12, 4), (12, 5)])
@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4), (3, 8)])
def test_keras3_m_by_n_masks_equal_tfmots_on_the_same_kernel(shape, m_by_n):
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl
  kernel = tf.constant(np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32))
  tfmot_mask = pruning_impl.Pruning(
      training_step_fn=lambda: 1, pruning_vars=[], pruning_schedule=None, block_size=(1, 1),
      block_pooling_type="AVG", sparsity_m_by_n=m_by_n)._update_mask_sparsity_m_by_n(
          kernel, m_by_n)
  mask = np.asarray(prune_keras3.m_by_n_mask(kernel, m_by_n))
  np.testing.assert_array_equal(mask, tfmot_mask.numpy())
  if shape[-2] % m_by_n[1] == 0:  # whole blocks: exactly m zeros in each
    assert 1 - mask.mean() == pytest.approx(m_by_n[0] / m_by_n[1])


def _m_by_n_models(kernel_shape):
  """The same conv or dense kernel in a tf_keras model and in a Keras 3 one."""
  if len(kernel_shape) == 4:
    h, w, cin, cout = kernel_shape
    layers = lambda k: (k.Input((6, 6, cin)), k.layers.Conv2D(cout, (h, w), name="conv"))
  else:
    cin, cout = kernel_shape
    layers = lambda k: (k.Input((cin,)), k.layers.Dense(cout, name="conv"))
  two, three = keras.Sequential(list(layers(keras))), K3.Sequential(list(layers(K3)))
  return two, three


@pytest.mark.parametrize("kernel_shape", [(3, 3, 8, 6), (16, 8)])
def test_the_keras3_backend_sets_m_by_n_masks_at_begin_like_tfmot_step_by_step(kernel_shape):
  """tfmot's m:n wrapper as kdprune runs it (its mask set at --pruning_begin) and the Keras 3
  backend, on the same kernel with the same noise between steps: the same mask at every step,
  dense before begin, the m:n pattern of the kernel entering step begin after it."""
  config = PruningConfig(structure="m_by_n", begin="5", keep_dense=())
  steps = config.resolve_steps(4, 3)
  assert steps["final_step"] == 5
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=kernel_shape).astype(np.float32)
  two, three = _m_by_n_models(kernel_shape)
  bias = np.zeros(kernel_shape[-1], np.float32)
  two.set_weights([kernel, bias])
  three.set_weights([kernel, bias])
  pruned_two, _ = magnitude.apply_pruning(two, config, steps)
  wrapper = magnitude.pruned_layers(pruned_two)[0]
  wrapper.pruning_step.assign(0)
  pruned_three, plan = prune_keras3.wrap(three, config, steps)
  assert plan == {"conv": "prune"}
  state = prune_keras3.state_of(pruned_three)
  x = np.zeros((1,) + tuple(two.input_shape[1:]), np.float32)
  for step in range(1, 10):
    entering = three.layers[0].kernel.numpy().copy()
    pruned_two(x, training=True)
    state.before_step()
    mask = state.masks[0].numpy()
    np.testing.assert_array_equal(mask, wrapper.pruning_vars[0][1].numpy(), err_msg=str(step))
    np.testing.assert_array_equal(three.layers[0].kernel.numpy(), wrapper.layer.kernel.numpy())
    if step < 5:
      assert mask.min() == 1.0 and prune_keras3.m_by_n_applied_step(pruned_three, steps) is None
    else:
      assert 1 - mask.mean() == 0.5
    if step == 5:
      np.testing.assert_array_equal(mask, prune_keras3.m_by_n_mask(entering, (2, 4)))
    noise = rng.normal(scale=0.3, size=kernel.shape).astype(np.float32)
    wrapper.layer.kernel.assign(wrapper.layer.kernel + noise)
    three.layers[0].kernel.assign(three.layers[0].kernel + noise)
  assert prune_keras3.m_by_n_applied_step(pruned_three, steps) == 5
  report = prune_keras3.sparsity_report(prune_keras3.strip(pruned_three), plan, (2, 4))
  assert report["layers"]["conv"]["m_by_n_ok"] and report["sparsity"] == 0.5
  prune_keras3.check_sparsity(report, 0.5, "student", m_by_n=(2, 4))


# -- dynamic pruning ------------------------------------------------------------------------------


def test_dynamic_revisions_on_a_keras3_model_keep_the_count_and_regrow():
  from pipelines.train import distill_keras3
  config = PruningConfig(final_sparsity=0.8, begin="2", end="40", frequency=6, keep_dense=(),
                         method="dynamic", mask_update_every=4, mask_update_end="60")
  steps = config.resolve_steps(10, 8)
  K3.utils.set_random_seed(0)
  inputs = K3.Input((16,))
  outputs = K3.layers.Dense(4, name="logits")(
      K3.layers.Dense(64, activation="relu", name="dense_1")(inputs))
  pruned, plan = prune_keras3.wrap(K3.Model(inputs, outputs), config, steps)
  assert plan == {"dense_1": "prune", "logits": "prune"}
  backend = prune_backend.for_model(pruned)
  revision = backend.revision(pruned, config, steps)
  trainer = distill_keras3.DistillationTrainer(pruned, distill=False, mask_revision=revision)
  trainer.compile(optimizer=K3.optimizers.Adam(1e-2), steps_per_execution=1, jit_compile=False)
  state = prune_keras3.state_of(pruned)
  schedule = magnitude.make_schedule(config, steps)
  seen = []

  class Record(K3.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      masks = {n: m.numpy().copy() for n, m in zip(state.layer_names, state.masks)}
      seen.append((state.step(), int(revision.revisions.numpy()), masks))

  rng = np.random.default_rng(1)
  x = rng.normal(size=(640, 16)).astype(np.float32)
  trainer.fit(x, x[:, :4].argmax(axis=1).astype(np.int64), batch_size=64, epochs=8, verbose=0,
              shuffle=False, callbacks=[Record()])
  assert [s for s, _, _ in seen] == list(range(1, 81))
  revised_at = [s for (s, r, _), (_, r0, _) in zip(seen[1:], seen) if r > r0]
  assert steps["mask_update_begin"] == 38 and revised_at == list(range(42, 60, 4))
  updates = [t for t in range(1, 81) if bool(schedule(tf.constant(t, tf.int64))[0])]
  changed = 0
  for (step, _, masks), (_, _, before) in zip(seen[1:], seen):
    expected = float(schedule(tf.constant(max(t for t in updates if t <= step), tf.int64))[1])
    for name, mask in masks.items():  # the count of active weights is the schedule's
      assert int(mask.sum()) == max(1, int(round(mask.size * (1 - expected)))), (step, name)
    if step in revised_at:
      changed += sum(int(np.sum(masks[n] != before[n])) for n in masks)
  assert changed > 0  # the revisions moved weights: dropped some, regrew as many
  report = revision.report()
  assert report["mask_revisions"] == len(revised_at) and report["regrown_total"] > 0
  assert set(report["regrown_per_layer"]) == {"dense_1", "logits"}
  stripped = prune_keras3.strip(pruned)
  measured = prune_keras3.sparsity_report(stripped, plan, targets={"dense_1": 0.8, "logits": 0.8})
  prune_keras3.check_sparsity(measured, 0.8, "student")


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


# -- end to end: m:n, dynamic, the teacher's modes, Keras Applications -----------------------------


def _with_distill(config, **distill):
  return dataclasses.replace(config, distill=dataclasses.replace(config.distill, **distill))


def _tb_tags(path):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
  acc.Reload()
  return acc, set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("keras3_run"))
  execute.run_stage(teacher.STAGE, tiny_teacher_config(), workdir, log=lambda *_: None)
  return workdir


@pytest.mark.slow
def test_a_keras3_m_by_n_student_distils_online_with_mixup(teacher_run):
  """m:n from --pruning_begin through the stage, with the teacher run in the step (online) on
  mixup batches: the pattern in every pruned layer of the saved file, the step it was set at in
  metrics.json and TensorBoard."""
  config = _with_distill(_keras3_student(name="k3_two_four", epochs=3, structure="m_by_n",
                                         final_sparsity=None, begin="0.4", keep_dense=()),
                         teacher_outputs="online", mixup=0.2)
  s = execute.run_stage(student.STAGE, config, teacher_run, log=lambda *_: None).entry
  m = s["metrics"]
  assert m["pruning_backend"] == "keras3" and m["teacher_outputs"] == "online"
  details = json.loads(open(os.path.join(teacher_run, "student", "k3_two_four",
                                         "metrics.json")).read())
  begin = details["pruning"]["steps"]["begin_step"]
  assert begin > 1 and m["m_by_n_applied_step"] == begin
  assert m["sparsity"] == pytest.approx(0.5, abs=0.005) and m["test_accuracy"] > 0.3
  assert details["pruning"]["layers"] and all(l["m_by_n_ok"]
                                              for l in details["pruning"]["layers"].values())
  assert "agreement" in m  # the online teacher ran in the step
  saved = K3.models.load_model(os.path.join(teacher_run, s["artifacts"]["model"]), compile=False)
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils
  for name in details["pruning"]["layers"]:
    assert pruning_utils.is_pruned_m_by_n(tf.constant(saved.get_layer(name).kernel.numpy()),
                                          m_by_n=(2, 4), last_channel="C_OUT")
  acc, tags = _tb_tags(os.path.join(teacher_run, "student", "k3_two_four", "tb", "train"))
  assert [e.step for e in acc.Tensors("m_by_n/applied_step")] == [begin]


@pytest.mark.slow
def test_a_keras3_dynamic_student_distils_from_top_k_stored_outputs(teacher_run):
  """Dynamic pruning through the stage, the student learning from the teacher's stored top-k
  outputs: revisions ran and regrew weights, the sparsity is the schedule's, TensorBoard has the
  revisions."""
  config = _with_distill(_keras3_student(name="k3_dynamic", epochs=4, method="dynamic",
                                         mask_update_every=5, mask_update_end="0.9"),
                         teacher_outputs="cached", teacher_topk=3)
  m = execute.run_stage(student.STAGE, config, teacher_run, log=lambda *_: None).entry["metrics"]
  assert m["pruning_backend"] == "keras3" and m["pruning_method"] == "dynamic"
  assert m["teacher_outputs"] == "cached"
  assert glob.glob(os.path.join(teacher_run, "teacher", "logits", "*top3*"))  # the top-k store
  assert m["mask_revisions"] > 0 and m["regrown_total"] > 0
  assert 0 < m["regrown_surviving"] <= m["regrown_total"]
  assert m["sparsity"] == pytest.approx(0.8, abs=0.005) and m["test_accuracy"] > 0.3
  _, tags = _tb_tags(os.path.join(teacher_run, "student", "k3_dynamic", "tb", "train"))
  assert {"mask_revision/regrown", "mask_revision/drop_fraction"} <= tags, tags


@pytest.mark.slow
def test_a_keras_applications_family_built_in_keras3_goes_through_the_student_stage(tmp_path):
  config = dataclasses.replace(
      _keras3_student(distill=False, epochs=2, frequency=1),
      model=ModelSpec("mobilenet_v3_small", width=0.35))
  config = dataclasses.replace(config, data=dataclasses.replace(config.data, train_examples=192))
  s = execute.run_stage(student.STAGE, config, str(tmp_path), log=lambda *_: None).entry
  m = s["metrics"]
  assert m["pruning_backend"] == "keras3"
  assert m["sparsity"] == pytest.approx(0.8, abs=0.005)
  saved = K3.models.load_model(os.path.join(str(tmp_path), s["artifacts"]["model"]),
                               compile=False)
  assert keras3_models.is_keras3(saved) and saved.output_shape == (None, 10)
  kinds = {type(l).__name__ for l in saved.layers}
  assert {"DepthwiseConv2D", "Multiply", "Resizing"} <= kinds and "Normalization" not in kinds


def keras3_pipeline():
  """Every stage, tiny, with a Keras 3 MLP student without dropout (each replica would draw its
  own dropout masks: two runs would differ as two seeds' do); for tests/mirrored_stages.py."""
  from pipelines.stages import pipeline
  pupil = _keras3_student()
  return pipeline.PipelineConfig(
      teacher=tiny_teacher_config(),
      student=dataclasses.replace(pupil, model=ModelSpec("mlp", width=64, depth=1, dropout=0.0)),
      qat=tiny_qat_config(), export=tiny_export_config())


@pytest.mark.slow
def test_a_keras3_student_under_two_mirrored_devices_gives_the_one_process_product(tmp_path):
  """Student, QAT (post-training int8) and export of a Keras 3 student in one process with two
  logical CPU devices under MirroredStrategy (--strategy=mirrored; the student stage refused it
  before), from the teacher of a one-process run: the same files and the same int8 product
  (same ops, same zeros per layer, test accuracy within one example) as one process."""
  import shutil
  from pipelines.stages import pipeline
  from tests.test_distribute import _files, _same_product
  first = tmp_path / "first"
  config = keras3_pipeline()
  pipeline.run(dataclasses.replace(config, until="teacher"), str(first), log=lambda *_: None)
  shutil.copytree(first, tmp_path / "mirrored")
  child = subprocess.Popen(
      [sys.executable, "-m", "tests.mirrored_stages", str(tmp_path / "mirrored"), "keras3"],
      cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  outcomes = pipeline.run(config, str(first), log=lambda *_: None)
  assert [o.ran for o in outcomes] == [False, True, True, True]
  stdout, stderr = child.communicate(timeout=600)
  assert child.returncode == 0 and "replicas: 2" in stdout, stderr[-3000:]
  assert "ran: teacher=False student/default=True qat/default=True export/default=True" in stdout
  assert _files(tmp_path / "mirrored") == _files(first)
  metrics = json.loads((tmp_path / "mirrored" / "student" / "default" / "metrics.json").read_text())
  assert metrics["pruning_backend"] == "keras3" and abs(metrics["sparsity"] - 0.8) <= 0.005
  _same_product(str(first), str(tmp_path / "mirrored"))


@pytest.mark.slow
def test_a_keras3_student_trains_in_mixed_precision_and_saves_float32(tmp_path):
  """--mixed_precision with a Keras 3 student (refused before): Keras 3's mixed_float16 policy
  while it is built (its logits layer float32), Keras 3's loss scaling, the saved student
  float32, and the int8 product from it."""
  import zipfile
  workdir = str(tmp_path)
  execute.run_stage(teacher.STAGE, tiny_teacher_config(), workdir, log=lambda *_: None)
  pupil = _keras3_student()
  config = dataclasses.replace(pupil, train=dataclasses.replace(pupil.train,
                                                                mixed_precision=True))
  config.validate()
  s = execute.run_stage(student.STAGE, config, workdir, log=lambda *_: None).entry
  m = s["metrics"]
  assert m["mixed_precision"] and m["optimizer"] == "LossScaleOptimizer", m["optimizer"]
  assert abs(m["sparsity"] - 0.8) <= 0.005 and m["test_accuracy"] > 0.3
  assert K3.mixed_precision.global_policy().name == "float32"  # restored after the stage
  assert keras.mixed_precision.global_policy().name == "float32"
  with zipfile.ZipFile(os.path.join(workdir, s["artifacts"]["model"])) as archive:
    saved = archive.read("config.json").decode()
  assert "mixed_float16" not in saved and '"float32"' in saved  # saved float32
  execute.run_stage(qat.STAGE, tiny_qat_config(), workdir, log=lambda *_: None)
  e = execute.run_stage(export.STAGE, tiny_export_config(), workdir, log=lambda *_: None).entry
  with open(os.path.join(workdir, e["artifacts"]["model"]), "rb") as f:
    data = f.read()
  assert tflite.inspect_ops(data)["integer_only"]
  assert e["metrics"]["test_accuracy"] > m["test_accuracy"] - 0.05


def test_a_keras3_students_mixed_precision_build_computes_in_float16_with_float32_logits():
  """What the student stage builds under --mixed_precision: float16 computation, float32
  variables and logits (Keras' mixed-precision recipe), for Keras 3 as for tf_keras."""
  from pipelines.train import precision
  with precision.precision(True, keras3=True):
    model = keras3_models.build_family(ModelSpec("cnn", width=4, depth=1), (8, 8, 1), 10)
  assert K3.mixed_precision.global_policy().name == "float32"
  conv = model.get_layer("conv_1_1")
  assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
  assert model.get_layer("logits").compute_dtype == "float32"
  saved = precision.to_float32(model)
  assert saved is not model and all(l.dtype_policy.name == "float32" for l in saved.layers)
  x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(saved(x).numpy(), model(x).numpy(), atol=0.05)
