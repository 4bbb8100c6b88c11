"""Pruning: schedule resolution and refusals, layer choice, exact sparsity, 2:4, early stopping."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from models.compat import keras
from pipelines.config import PruningConfig, parse_step_or_fraction
from pipelines.config.errors import ConfigError, StageError
from pipelines.prune import magnitude as pruning
from pipelines.train import callbacks

# ---------------------------------------------------------------- schedule resolution


def test_fractions_become_steps_and_end_lands_on_the_frequency_grid():
  steps = PruningConfig(begin="0.1", end="0.75", frequency=7).resolve_steps(100, 10)
  assert steps["planned_steps"] == 1000 and steps["begin_step"] == 100
  # 750 is not on the grid 100 + 7k: the last update would come at 744 with S < S_f.
  assert steps["end_step"] == 744 and (744 - 100) % 7 == 0
  assert steps["final_step"] == 744


def test_steps_and_percent_forms():
  assert parse_step_or_fraction("500", "x") == ("steps", 500)
  assert parse_step_or_fraction("0.25", "x") == ("fraction", 0.25)
  assert parse_step_or_fraction("25%", "x") == ("fraction", 0.25)
  steps = PruningConfig(begin="20", end="50%", frequency=10).resolve_steps(10, 10)
  assert (steps["begin_step"], steps["end_step"]) == (20, 50)


def test_auto_frequency_is_a_tenth_of_an_epoch():
  assert PruningConfig().resolve_steps(422, 10)["frequency"] == 42
  assert PruningConfig().resolve_steps(5, 100)["frequency"] == 1
  assert PruningConfig().resolve_steps(5000, 10)["frequency"] == 100


@pytest.mark.parametrize("kwargs,steps_per_epoch,epochs,message", [
    (dict(begin="0", end="2000"), 100, 10, "reaches its final sparsity at step 2000 "
                                           "(--pruning_end=2000) but training plans only 1000"),
    (dict(begin="0.5", end="0.5"), 100, 10, "must come after --pruning_begin"),
    (dict(begin="100", end="105", frequency=10), 100, 10, "at least one --pruning_frequency"),
    (dict(begin="1.5"), 100, 10, "must be in [0, 1]"),
    (dict(begin="soon"), 100, 10, "must be a step (500) or a fraction"),
    (dict(final_sparsity=1.0), 100, 10, "--final_sparsity=1.0 must be in [0, 1)"),
    (dict(initial_sparsity=0.5, final_sparsity=0.3), 100, 10, "above --final_sparsity"),
    (dict(structure="m_by_n", final_sparsity=0.9), 100, 10, "does not match --m_by_n=2:4"),
    (dict(structure="m_by_n", m_by_n=(4, 4)), 100, 10, "needs 0 < m < n"),
    (dict(exponent=0.0), 100, 10, "--pruning_exponent"),
    (dict(schedule="cubic"), 100, 10, "--pruning_schedule=cubic"),
])
def test_impossible_schedules_are_refused(kwargs, steps_per_epoch, epochs, message):
  config = PruningConfig(**kwargs)
  with pytest.raises(ConfigError) as err:
    config.validate()
    config.resolve_steps(steps_per_epoch, epochs)
  assert message in str(err.value)


def test_m_by_n_target_is_m_over_n_and_constant_schedules_finish_at_the_first_update():
  config = PruningConfig(structure="m_by_n")
  assert config.target == 0.5
  steps = PruningConfig(schedule="constant", begin="0", frequency=10).resolve_steps(100, 2)
  assert steps["final_step"] == 10  # tfmot counts from step 1; the first update is at 10


# ---------------------------------------------------------------- layers, strip, sparsity


def _mlp():
  inputs = keras.Input((16,))
  x = keras.layers.Dense(32, name="hidden")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.Dense(4, name="logits")(x)
  return keras.Model(inputs, x)


def _prune_and_train(config, epochs=3):
  keras.utils.set_random_seed(0)
  model = _mlp()
  steps = config.resolve_steps(10, epochs)
  pruned, plan = pruning.apply_pruning(model, config, steps)
  pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(320, 16)).astype(np.float32), rng.integers(0, 4, 320)
  pruned.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  return pruned, plan, steps


def test_plan_keeps_small_and_named_layers_dense():
  model = _mlp()
  plan = pruning.plan_layers(model, PruningConfig())
  assert plan == {"hidden": "prune", "bn": "no prunable weights",
                  "logits": "kept dense: only 128 weights (< 512, and < 25% of the model's 640)"}
  with pytest.raises(ConfigError, match="no layer of the student would be pruned"):
    pruning.plan_layers(model, PruningConfig(keep_dense=("Dense",)))  # by class name
  plan = pruning.plan_layers(model, PruningConfig(keep_dense=("logits",)))  # by layer name
  assert plan["hidden"] == "prune" and plan["logits"] == "kept dense by --pruning_keep_dense"
  with pytest.raises(ConfigError, match="names nope, which the student does not have"):
    pruning.plan_layers(model, PruningConfig(keep_dense=("nope",)))
  assert pruning.plan_layers(model, PruningConfig(keep_dense=()))["logits"] == "prune"


def test_pruning_keeps_the_original_weights():
  model = _mlp()
  before = model.get_layer("hidden").kernel.numpy().copy()
  pruned, _ = pruning.apply_pruning(model, PruningConfig(keep_dense=()),
                                    PruningConfig().resolve_steps(10, 10))
  wrapped = [l for l in pruned.layers if l.name.endswith("hidden")][0]
  np.testing.assert_array_equal(wrapped.layer.kernel.numpy(), before)


def test_exact_sparsity_after_strip():
  config = PruningConfig(final_sparsity=0.75, begin="0", end="0.6", frequency=2, keep_dense=())
  pruned, plan, steps = _prune_and_train(config)
  assert pruning.pruning_step(pruned) == steps["planned_steps"] == 30
  stripped = pruning.strip(pruned)
  assert not pruning.pruned_layers(stripped)
  report = pruning.sparsity_report(stripped, plan)
  assert set(report["layers"]) == {"hidden", "logits"}
  for entry in report["layers"].values():
    assert entry["sparsity"] == pytest.approx(0.75, abs=0.005)
  kernel = stripped.get_layer("hidden").kernel.numpy()
  assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.005)
  assert report["nonzero_params"] == sum(int(np.count_nonzero(w)) for w in stripped.get_weights())
  pruning.check_sparsity(report, 0.75, "student")
  with pytest.raises(StageError, match="below the target 0.9000"):
    pruning.check_sparsity(report, 0.9, "student")


def test_layers_with_their_own_final_sparsity():
  config = PruningConfig(final_sparsity=0.5, begin="0", end="0.6", frequency=2, keep_dense=(),
                         layer_sparsity=(("logits", 0.9),))
  pruned, plan, _ = _prune_and_train(config)
  targets = {n: config.target_for(n) for n in ("hidden", "logits")}
  report = pruning.sparsity_report(pruning.strip(pruned), plan, targets=targets)
  assert report["layers"]["hidden"]["sparsity"] == pytest.approx(0.5, abs=0.005)
  assert report["layers"]["logits"]["sparsity"] == pytest.approx(0.9, abs=0.005)
  # The total's target is the weight-weighted mean of the layers' targets.
  assert report["target"] == pytest.approx((512 * 0.5 + 128 * 0.9) / 640, abs=1e-6)
  pruning.check_sparsity(report, 0.5, "student")
  report["layers"]["logits"]["sparsity"] = 0.8  # short of its own 0.9, above the global 0.5
  with pytest.raises(StageError, match="layers short: logits 0.8000"):
    pruning.check_sparsity(report, 0.5, "student")


@pytest.mark.parametrize("items,kwargs,message", [
    (["logits:1.2"], {}, "--pruning_layer_sparsity=logits:1.2 must be in [0, 1)"),
    (["logits"], {}, "must be layer:sparsity"),
    (["logits:0.9", "logits:0.8"], {}, "names a layer twice"),
    (["logits:0.1"], dict(initial_sparsity=0.2, final_sparsity=0.5), "below --initial_sparsity"),
    (["logits:0.5"], dict(structure="m_by_n"), "unstructured only"),
])
def test_bad_layer_sparsity_is_refused(items, kwargs, message):
  from pipelines.config import parse_layer_sparsity
  with pytest.raises(ConfigError) as err:
    PruningConfig(layer_sparsity=parse_layer_sparsity(items), **kwargs).validate()
  assert message in str(err.value)


def test_layer_sparsity_must_name_a_pruned_layer():
  with pytest.raises(ConfigError, match="names nope, which the student does not have"):
    pruning.plan_layers(_mlp(), PruningConfig(layer_sparsity=(("nope", 0.9),)))
  with pytest.raises(ConfigError, match="names logits, which is not pruned .kept dense"):
    pruning.plan_layers(_mlp(), PruningConfig(layer_sparsity=(("logits", 0.9),)))


def test_two_four_pattern():
  config = PruningConfig(structure="m_by_n", begin="0", frequency=1, keep_dense=())
  pruned, plan, _ = _prune_and_train(config, epochs=2)
  stripped = pruning.strip(pruned)
  report = pruning.sparsity_report(stripped, plan, m_by_n=(2, 4))
  assert plan["hidden"] == "prune" and report["layers"]["hidden"]["m_by_n_ok"]
  # Independently: every block of 4 consecutive input weights of each output unit has >= 2 zeros.
  kernel = stripped.get_layer("hidden").kernel.numpy()  # [C_IN=16, C_OUT=32]
  blocks = kernel.T.reshape(32, 4, 4)
  assert np.all(np.sum(blocks == 0, axis=-1) >= 2)
  assert report["layers"]["hidden"]["sparsity"] == pytest.approx(0.5, abs=0.01)
  pruning.check_sparsity(report, 0.5, "student", m_by_n=(2, 4))
  # logits: 32 input channels, a multiple of 4, so it is pruned 2:4 as well
  assert report["layers"]["logits"]["m_by_n_ok"]


def test_m_by_n_keeps_layers_whose_inputs_do_not_fit_the_blocks():
  inputs = keras.Input((6,))
  x = keras.layers.Dense(64, name="first")(inputs)
  x = keras.layers.Dense(8, name="second")(x)
  plan = pruning.plan_layers(keras.Model(inputs, x),
                             PruningConfig(structure="m_by_n", keep_dense=()))
  assert plan["first"].startswith("kept dense: input channels (6) not a multiple of 4")
  assert plan["second"] == "prune"


# ---------------------------------------------------------------- early stopping


class _FakeStudent:
  def __init__(self):
    self.weights_now = 0
    self.restored = None

  def get_weights(self):
    return self.weights_now

  def set_weights(self, w):
    self.restored = w


class _FakeModel:
  stop_training = False


def _drive(callback, student, epochs, step_per_epoch, val_loss):
  model = _FakeModel()
  callback.set_model(model)
  step = {"now": 0}
  callback.step_fn = lambda: step["now"]
  stopped_at = None
  for epoch in range(epochs):
    step["now"] = (epoch + 1) * step_per_epoch
    student.weights_now = epoch
    callback.on_epoch_end(epoch, {"val_loss": val_loss(epoch)})
    if model.stop_training:
      stopped_at = epoch
      break
  callback.restore_best()
  return stopped_at


def test_early_stopping_waits_for_the_end_of_the_schedule_on_a_plateau():
  student = _FakeStudent()
  es = callbacks.PruningAwareEarlyStopping(student, final_step=500, patience=2)
  # A flat validation loss from the start: Keras' EarlyStopping would stop at epoch 2.
  stopped = _drive(es, student, epochs=20, step_per_epoch=100, val_loss=lambda e: 1.0)
  assert es.first_final_epoch == 4          # epoch 5 ends at step 500
  assert stopped == 6                        # two epochs of patience after that
  assert student.restored == 4


def test_best_weights_are_chosen_among_final_sparsity_states_only():
  student = _FakeStudent()
  es = callbacks.PruningAwareEarlyStopping(student, final_step=300, patience=0)
  # Dense early epochs look best (0.1); after pruning the loss is higher but improving.
  losses = [0.1, 0.2, 0.9, 0.8, 0.7, 0.75]
  _drive(es, student, epochs=6, step_per_epoch=100, val_loss=lambda e: losses[e])
  assert es.best_epoch == 4 and student.restored == 4


def test_training_that_never_reaches_final_sparsity_fails_loudly():
  student = _FakeStudent()
  es = callbacks.PruningAwareEarlyStopping(student, final_step=10_000, patience=2)
  with pytest.raises(StageError, match="before the schedule reached its final sparsity"):
    _drive(es, student, epochs=3, step_per_epoch=100, val_loss=lambda e: 1.0)


def test_accuracy_monitor_prefers_higher():
  student = _FakeStudent()
  es = callbacks.PruningAwareEarlyStopping(student, final_step=100, monitor="val_accuracy")
  accs = [0.5, 0.9, 0.8]
  model = _FakeModel()
  es.set_model(model)
  es.step_fn = lambda: 100
  for epoch, a in enumerate(accs):
    student.weights_now = epoch
    es.on_epoch_end(epoch, {"val_accuracy": a})
  es.restore_best()
  assert student.restored == 1


def test_layers_whose_pruned_weight_is_not_called_kernel():
  # tfmot prunes SeparableConv2D's pointwise_kernel (and leaves DepthwiseConv2D alone).
  inputs = keras.Input((8, 8, 16))
  x = keras.layers.SeparableConv2D(64, 3, name="separable")(inputs)
  x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(4, name="logits")(x)
  model = keras.Model(inputs, x)
  config = PruningConfig(final_sparsity=0.5, begin="0", end="1", frequency=1, keep_dense=())
  plan = pruning.plan_layers(model, config)
  assert plan["separable"] == "prune" and plan["depthwise"] == "no prunable weights"
  pruned, plan = pruning.apply_pruning(model, config, config.resolve_steps(1, 1))
  pruned.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
  pruned.fit(np.ones((4, 8, 8, 16), np.float32), np.zeros(4), epochs=1, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  report = pruning.sparsity_report(pruning.strip(pruned), plan)
  assert report["layers"]["separable"]["weights"] == 16 * 64  # the 1x1x16x64 pointwise kernel
  assert report["layers"]["separable"]["sparsity"] == pytest.approx(0.5, abs=0.01)
  m_by_n = pruning.plan_layers(model, PruningConfig(structure="m_by_n", keep_dense=()))
  assert m_by_n["separable"] == "prune"  # 16 input channels: blocks of 4 fit


@pytest.mark.parametrize("family,shape", [("mlp", (10,)), ("mlp", (8, 8, 1)), ("cnn", (28, 28, 1)),
                                          ("cnn", (8, 8, 3)), ("lenet", (28, 28, 1)),
                                          ("lenet", (8, 8, 3)), ("tinycnn", (28, 28, 1)),
                                          ("tinycnn", (8, 8, 3)), ("resnet", (32, 32, 3)),
                                          ("resnet", (8, 8, 1))])
def test_kernel_layers_from_the_spec_match_the_built_model(family, shape):
  """The student stage plans pruning from the spec, without TensorFlow: it must see what tfmot sees."""
  from models import ModelSpec, build_model
  from models.spec import kernel_layers
  spec = ModelSpec(family, width=8, depth=2)
  model = build_model(spec, shape, 5)
  built = [(l.name, type(l).__name__, pruning._kernel_size(l), pruning._input_channels(l))
           for l in model.layers if pruning._kernel_size(l)]
  assert sorted(kernel_layers(spec, shape, 5)) == sorted(built)


def _csv(path, features=10, classes=3, rows=400):
  rng = np.random.default_rng(0)
  lines = [",".join(["f%d" % i for i in range(features)] + ["label"])]
  lines += [",".join(["%.4f" % v for v in rng.normal(size=features)] + [str(i % classes)])
            for i in range(rows)]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_a_small_tabular_mlp_student_prunes_its_big_layers(tmp_path):
  """Every layer of a width-16 MLP on ten features is under 512 weights; ``auto`` must still prune
  its big layers (issue 17, defect 11b), and the student stage's validate says so up front."""
  import dataclasses

  from models import ModelSpec, build_model
  from pipelines.stages import student
  from tests.conftest import tiny_student_config
  base = tiny_student_config()
  config = dataclasses.replace(
      base, model=ModelSpec("mlp", width=16),
      data=dataclasses.replace(base.data, dataset="csv:" + _csv(tmp_path / "t.csv"),
                               target_column="label"))
  student.validate(config)
  plan = pruning.plan_layers(build_model(config.model, (10,), 3), config.pruning)
  assert plan["dense_1"] == plan["dense_2"] == "prune"  # 160 and 256 of the 464 weights
  assert plan["logits"].startswith("kept dense: only 48 weights")
  # A student with nothing left to prune is refused by validate, before any teacher trains.
  m_by_n = dataclasses.replace(config, model=ModelSpec("mlp", width=6, depth=1),
                               pruning=dataclasses.replace(config.pruning, structure="m_by_n",
                                                                   final_sparsity=None))
  with pytest.raises(ConfigError, match="no layer of the student would be pruned"):
    student.validate(m_by_n)
