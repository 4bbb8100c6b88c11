"""m:n pruning starts at --pruning_begin: dense until then, then the m:n pattern of the weights
at that step (issue 17, defect 2: tfmot fixes m:n masks at step 1, from the initial weights)."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from pipelines.prune import magnitude as pruning
from models.compat import keras
from pipelines.config import PruningConfig

BEGIN = 6  # step 2 of the second epoch (4 steps per epoch)
STEPS_PER_EPOCH, EPOCHS = 4, 3


def _model():
  inputs = keras.Input((8, 8, 1))
  x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)  # 1 input channel: dense
  x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)  # [3, 3, 8, 8]
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(4, name="logits")(x)  # [128, 4]
  return keras.Model(inputs, x)


def m_by_n_mask(kernel, m, n):
  """Independent reference: keep the n - m largest |w| of every n consecutive weights along the
  input-channel axis (axis -2, TFLite's last axis), for each output unit (and position)."""
  k = np.moveaxis(np.abs(kernel), -2, -1)  # [..., C_OUT, C_IN]
  blocks = k.reshape(-1, n)
  keep = np.argsort(-blocks, axis=-1)[:, :n - m]
  mask = np.zeros_like(blocks)
  np.put_along_axis(mask, keep, 1.0, axis=-1)
  return np.moveaxis(mask.reshape(k.shape), -1, -2)


class _Record(keras.callbacks.Callback):
  """Per step: pruning step, and each pruned layer's kernel and mask after the step."""

  def __init__(self, wrappers):
    super().__init__()
    self.wrappers = wrappers
    self.steps, self.kernels, self.masks, self.epoch_reports = [], [], [], []

  def on_train_batch_end(self, batch, logs=None):
    self.steps.append(pruning.pruning_step(self.model))
    self.kernels.append({w.layer.name: w.layer.kernel.numpy().copy() for w in self.wrappers})
    self.masks.append({w.layer.name: w.pruning_vars[0][1].numpy().copy() for w in self.wrappers})


def _train(m_by_n=(2, 4), begin=str(BEGIN)):
  keras.utils.set_random_seed(0)
  model = _model()
  config = PruningConfig(structure="m_by_n", m_by_n=m_by_n, begin=begin, keep_dense=())
  steps = config.resolve_steps(STEPS_PER_EPOCH, EPOCHS)
  pruned, plan = pruning.apply_pruning(model, config, steps)
  assert plan["conv1"].startswith("kept dense") and plan["conv2"] == plan["logits"] == "prune"
  wrappers = pruning.pruned_layers(pruned)
  initial = {w.layer.name: w.layer.kernel.numpy().copy() for w in wrappers}
  pruned.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss=keras.losses.SparseCategoricalCrossentropy(True))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16 * STEPS_PER_EPOCH, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 4, len(x))
  record = _Record(wrappers)

  class _EpochReport(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # after UpdatePruningStep has masked the weights
      record.epoch_reports.append(pruning.sparsity_report(pruning.strip(pruned), plan, m_by_n))

  pruned.fit(x, y, batch_size=16, epochs=EPOCHS, verbose=0, shuffle=False,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), record, _EpochReport()])
  return pruned, plan, steps, initial, record


@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4)])
def test_m_by_n_starts_at_begin_from_the_weights_of_that_step(m_by_n):
  m, n = m_by_n
  pruned, plan, steps, initial, record = _train(m_by_n)
  assert steps["final_step"] == BEGIN
  assert record.steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
  for step, masks in zip(record.steps, record.masks):
    for name, mask in masks.items():
      sparsity = 1.0 - float(np.mean(mask))
      if step < BEGIN:
        assert sparsity == 0.0, (m_by_n, name, step, sparsity)
      else:
        assert sparsity == pytest.approx(m / n), (m_by_n, name, step, sparsity)
  # The mask is the m:n pattern of the weights entering step BEGIN (those after step BEGIN - 1),
  # not of the initial weights, and it stays fixed afterwards.
  at_begin = record.kernels[BEGIN - 2]
  for name, mask in record.masks[BEGIN - 1].items():
    np.testing.assert_array_equal(mask, m_by_n_mask(at_begin[name], m, n), err_msg=name)
    assert np.any(mask != m_by_n_mask(initial[name], m, n)), name
    for later in record.masks[BEGIN:]:
      np.testing.assert_array_equal(later[name], mask, err_msg=name)
  # Measured on the stripped model at each epoch end: dense after epoch 1, m:n after epoch 2.
  first, second, last = record.epoch_reports
  for name in ("conv2", "logits"):
    assert first["layers"][name]["zeros"] == 0, (name, first["layers"][name])
    assert second["layers"][name]["sparsity"] == pytest.approx(m / n, abs=1e-6)
    assert last["layers"][name]["m_by_n_ok"]
  pruning.check_sparsity(last, m / n, "student", m_by_n=m_by_n)
  assert pruning.m_by_n_applied_step(pruned, steps) == BEGIN


def test_m_by_n_at_begin_zero_still_prunes_from_the_first_steps():
  pruned, plan, steps, _, record = _train(begin="0")
  # begin 0: the first step on tfmot's grid (the config's final_step) applies the pattern.
  assert record.masks[steps["final_step"] - 1]["conv2"].mean() == pytest.approx(0.5)
  report = pruning.sparsity_report(pruning.strip(pruned), plan, (2, 4))
  pruning.check_sparsity(report, 0.5, "student", m_by_n=(2, 4))


def test_applied_step_is_written_to_tensorboard(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  keras.utils.set_random_seed(0)
  config = PruningConfig(structure="m_by_n", begin=str(BEGIN), keep_dense=())
  steps = config.resolve_steps(STEPS_PER_EPOCH, EPOCHS)
  pruned, _ = pruning.apply_pruning(_model(), config, steps)
  pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True),
                 steps_per_execution=16)  # the callback need not see the exact step
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16 * STEPS_PER_EPOCH, 8, 8, 1)).astype(np.float32)
  assert pruning.m_by_n_applied_step(pruned, steps) is None
  pruned.fit(x, rng.integers(0, 4, len(x)), batch_size=16, epochs=EPOCHS, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep(),
                        pruning.MByNSummary(pruned, steps, str(tmp_path / "train"))])
  acc = event_accumulator.EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
  acc.Reload()
  events = acc.Tensors("m_by_n/applied_step")
  import tensorflow as tf
  assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events] == [(BEGIN, BEGIN)]


def test_two_four_student_records_when_the_pattern_was_applied(tmp_path):
  import json
  from tensorboard.backend.event_processing import event_accumulator
  from pipelines.runtime import execute as stage
  from pipelines.stages import student
  from tests.conftest import tiny_student_config
  config = tiny_student_config(name="two_four", distill=False, epochs=3, structure="m_by_n",
                               final_sparsity=None, begin="0.4", keep_dense=())
  outcome = stage.execute(config.stage, student.run, config, str(tmp_path),
                          student.fingerprint_inputs(config, str(tmp_path)), log=lambda *_: None)
  metrics = json.loads((tmp_path / "student" / "two_four" / "metrics.json").read_text())
  begin = metrics["pruning"]["steps"]["begin_step"]
  assert begin > 1 and metrics["pruning"]["steps"]["final_step"] == begin
  assert outcome.entry["metrics"]["m_by_n_applied_step"] == begin
  assert metrics["sparsity"] == pytest.approx(0.5, abs=0.005)
  assert all(l["m_by_n_ok"] for l in metrics["pruning"]["layers"].values())
  acc = event_accumulator.EventAccumulator(str(tmp_path / "student" / "two_four" / "tb" / "train"),
                                           size_guidance={"tensors": 0})
  acc.Reload()
  assert [e.step for e in acc.Tensors("m_by_n/applied_step")] == [begin]


def test_resumed_before_begin_still_applies_at_begin(tmp_path):
  import tensorflow as tf
  config = PruningConfig(structure="m_by_n", begin=str(BEGIN), keep_dense=())
  steps = config.resolve_steps(STEPS_PER_EPOCH, EPOCHS)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16 * STEPS_PER_EPOCH, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 4, len(x))

  def build():
    keras.utils.set_random_seed(0)
    pruned, _ = pruning.apply_pruning(_model(), config, steps)
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    return pruned

  first = build()
  first.fit(x, y, batch_size=16, epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])  # steps 1-4: dense
  path = tf.train.Checkpoint(model=first).save(str(tmp_path / "ckpt"))
  second = build()
  tf.train.Checkpoint(model=second).restore(path).expect_partial()
  assert pruning.pruning_step(second) == STEPS_PER_EPOCH
  assert pruning.m_by_n_applied_step(second, steps) is None
  second.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  assert pruning.m_by_n_applied_step(second, steps) == BEGIN
  for layer in pruning.pruned_layers(second):
    assert 1 - float(np.mean(layer.pruning_vars[0][1].numpy())) == pytest.approx(0.5)
