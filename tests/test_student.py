"""Student stage: distillation under pruning, end to end on tiny configs."""

import dataclasses
import json
import os

import numpy as np
import pytest

from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.runtime import execute as stage
from pipelines.runtime import rundir
from pipelines.stages import student
from pipelines.train import distill
from tests.conftest import tiny_student_config


def _quiet(*_):
  pass


@pytest.fixture
def trained(finished_run):
  return finished_run


def test_pipeline_runs_teacher_then_student(trained):
  workdir, config, outcomes = trained
  assert [o.name for o in outcomes] == ["teacher", "student/default", "qat/default",
                                        "export/default"]
  d = workdir / "student" / "default"
  for name in ("model.keras", "metrics.json", "config.json", "metrics.jsonl"):
    assert (d / name).is_file(), name
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["distill"] and metrics["teacher_outputs"] == "cached"
  assert metrics["test_accuracy"] > 0.3  # chance is 0.1; the full logits give 0.40 here
  assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)
  for layer in metrics["pruning"]["layers"].values():
    assert layer["sparsity"] >= 0.795
  assert metrics["nonzero_params"] < metrics["params"]
  # The best epoch is one at final sparsity (the schedule ends half-way through).
  assert metrics["best_epoch"] >= metrics["first_final_sparsity_epoch"]
  entry = rundir.RunDir(str(workdir)).entry("student/default")
  assert entry["status"] == "done" and entry["artifacts"]["model"] == "student/default/model.keras"
  assert entry["config"]["teacher"]["fingerprint"] == rundir.RunDir(str(workdir)).entry(
      "teacher")["fingerprint"]


def test_saved_student_is_stripped_sparse_and_is_what_was_measured(trained):
  workdir, config, _ = trained
  d = workdir / "student" / "default"
  model = distill.load_keras_model(str(d / "model.keras"))
  assert not any("prune_low_magnitude" in l.name for l in model.layers)
  kernel = model.get_layer("dense_1").kernel.numpy()
  assert np.mean(kernel == 0) == pytest.approx(0.8, abs=0.005)
  bundle = data.load(config.student.data)
  x, y = next(iter(bundle.batches("test", 1000)))
  acc = float(np.mean(np.argmax(model(x), -1) == y.numpy()))
  assert acc == pytest.approx(json.loads((d / "metrics.json").read_text())["test_accuracy"])


def test_logged_losses_and_sparsity(trained):
  workdir, _, _ = trained
  epochs = [json.loads(l) for l in
            (workdir / "student" / "default" / "metrics.jsonl").read_text().splitlines()]
  assert {"loss", "distill_loss", "hard_loss", "accuracy", "val_loss", "val_accuracy",
          "learning_rate"} <= set(epochs[0])
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(workdir / "student" / "default" / "tb" / "metrics"))
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  assert any(t.endswith("dense_1/mask:0/sparsity") for t in tags), tags


def test_cached_and_online_teacher_outputs_give_the_same_loss(trained):
  workdir, config, _ = trained
  bundle = data.load(config.student.data)
  tmodel = distill.load_keras_model(str(workdir / "teacher" / "model.keras"))
  logits = distill.teacher_logits(tmodel, bundle, 128)
  batch_x, (batch_y, batch_t) = next(iter(distill.with_teacher_logits(bundle, logits, 64, seed=3)))
  # Shuffling happened after zipping: each example still carries its own teacher output.
  np.testing.assert_allclose(batch_t.numpy(), tmodel(batch_x, training=False).numpy(),
                             rtol=1e-4, atol=1e-4)
  smodel = distill.load_keras_model(str(workdir / "student" / "default" / "model.keras"))
  trainer = distill.DistillationTrainer(smodel, teacher=tmodel, temperature=3.0, alpha=0.3)
  s_logits = smodel(batch_x, training=False)
  cached = trainer.compute_losses(batch_x, batch_y, batch_t, s_logits)
  online = trainer.compute_losses(batch_x, batch_y, None, s_logits)
  for part in ("total", "distill", "hard"):
    np.testing.assert_allclose(cached[part], online[part], rtol=1e-4)


def test_online_mode_and_a_second_named_student(trained, capsys):
  workdir, _, _ = trained
  config = tiny_student_config(name="online", teacher_outputs="online", epochs=3)
  outcome = stage.execute(config.stage, student.run, config, str(workdir),
                          student.fingerprint_inputs(config, str(workdir)), log=_quiet)
  assert outcome.ran and outcome.entry["metrics"]["teacher_outputs"] == "online"
  # The tiny student (mlp width 64) is larger than the tiny teacher (width 32): a warning, not
  # an error.
  assert ("[student/online] warning: the student (4810 parameters) is larger than its teacher "
          "(2410)") in capsys.readouterr().out
  manifest = rundir.RunDir(str(workdir)).load()["stages"]
  assert {"teacher", "student/default", "student/online"} <= set(manifest)
  assert (workdir / "student" / "online" / "model.keras").is_file()


def test_hard_label_ablation_needs_no_teacher(tmp_path):
  config = tiny_student_config(name="hard", distill=False, epochs=3)
  outcome = stage.execute(config.stage, student.run, config, str(tmp_path),
                          student.fingerprint_inputs(config, str(tmp_path)), log=_quiet)
  metrics = outcome.entry["metrics"]
  assert metrics["distill"] is False and metrics["teacher_outputs"] == "none"
  assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)
  assert not (tmp_path / "teacher").exists()


def test_two_four_student(trained):
  workdir, _, _ = trained
  config = tiny_student_config(name="two_four", structure="m_by_n", final_sparsity=None, epochs=3,
                               keep_dense=())
  outcome = stage.execute(config.stage, student.run, config, str(workdir),
                          student.fingerprint_inputs(config, str(workdir)), log=_quiet)
  metrics = json.loads((workdir / "student" / "two_four" / "metrics.json").read_text())
  assert outcome.entry["metrics"]["target_sparsity"] == 0.5
  assert all(l["m_by_n_ok"] for l in metrics["pruning"]["layers"].values())
  assert metrics["sparsity"] == pytest.approx(0.5, abs=0.005)


def test_missing_teacher_is_refused_with_what_to_run(tmp_path):
  config = tiny_student_config()
  with pytest.raises(ConfigError, match="no finished teacher in .*run kdprune-teacher"):
    student.fingerprint_inputs(config, str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_a_schedule_training_cannot_finish_is_refused_before_work(tmp_path):
  config = tiny_student_config(end="5000", epochs=2)
  with pytest.raises(ConfigError, match=r"reaches its final sparsity at step 5000 "
                                        r"\(--pruning_end=5000\) but training plans only 42 steps"):
    stage.run_stage(student.STAGE, config, str(tmp_path), log=_quiet)
  assert os.listdir(tmp_path) == []


def test_augmented_student_gets_online_teacher_outputs(trained):
  workdir, _, _ = trained
  base = tiny_student_config(name="augmented", epochs=3)
  config = dataclasses.replace(base, train=dataclasses.replace(base.train, augment="shift"))
  assert config.resolved()["distill"]["teacher_outputs"] == "online"
  outcome = stage.execute(config.stage, student.run, config, str(workdir),
                          student.fingerprint_inputs(config, str(workdir)), log=_quiet)
  assert outcome.entry["metrics"]["teacher_outputs"] == "online"
  cached = dataclasses.replace(config, distill=dataclasses.replace(config.distill,
                                                                   teacher_outputs="cached"))
  with pytest.raises(ConfigError, match="cached teacher outputs belong to the unaugmented"):
    cached.validate()


@pytest.mark.parametrize("changes,message", [
    (dict(name="../escape"), "--student_name=../escape"),
    (dict(distill=dataclasses.replace(tiny_student_config().distill, temperature=0.0)),
     "--temperature=0.0 must be > 0"),
    (dict(distill=dataclasses.replace(tiny_student_config().distill, alpha=1.5)),
     "--alpha=1.5 must be in [0, 1]"),
    (dict(train=dataclasses.replace(tiny_student_config().train, seed=-1)),
     "--student_seed=-1 must be in [0, 2**32)"),
    (dict(data=dataclasses.replace(tiny_student_config().data, seed=-3)),
     "--seed=-3 must be in [0, 2**32)"),
])
def test_student_flags_are_validated(changes, message):
  with pytest.raises(ConfigError) as err:
    dataclasses.replace(tiny_student_config(), **changes).validate()
  assert message in str(err.value)


@pytest.mark.slow
def test_student_seed_repeats_a_student_on_the_same_split(tmp_path):
  base = tiny_student_config(distill=False, epochs=2)
  assert "seed" not in base.resolved()["train"]  # unset: finished runs keep their fingerprint

  def kernel(name, seed):
    config = dataclasses.replace(base, name=name, train=dataclasses.replace(base.train, seed=seed))
    outcome = stage.execute(config.stage, student.run, config, str(tmp_path),
                            student.fingerprint_inputs(config, str(tmp_path)), log=_quiet)
    model = distill.load_keras_model(str(tmp_path / "student" / name / "model.keras"))
    return outcome, model.get_layer("dense_1").kernel.numpy()

  default, k_default = kernel("default", None)
  same, k_same = kernel("seed0", 0)  # --student_seed equal to --seed: the same student
  other, k_other = kernel("seed1", 1)
  np.testing.assert_allclose(k_same, k_default, atol=1e-5)
  assert np.mean(np.abs(k_other - k_default) > 1e-3) > 0.1
  assert other.entry["config"]["config"]["train"]["seed"] == 1
  assert other.entry["fingerprint"] != default.entry["fingerprint"]
  splits = [json.loads((tmp_path / "student" / n / "metrics.json").read_text())["data"]
            for n in ("default", "seed0", "seed1")]
  assert splits[0] == splits[1] == splits[2]  # the split follows --seed, not --student_seed


def test_a_student_learns_from_the_teacher_top3_outputs_on_disk(trained):
  workdir, _, _ = trained
  config = tiny_student_config(name="top3", epochs=3)
  config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, teacher_topk=3))
  outcome = stage.execute(config.stage, student.run, config, str(workdir),
                          student.fingerprint_inputs(config, str(workdir)), log=_quiet)
  metrics = outcome.entry["metrics"]
  assert outcome.ran and metrics["teacher_outputs"] == "cached"
  assert metrics["test_accuracy"] > 0.3  # chance is 0.1; the full logits give 0.40 here
  stores = list((workdir / "teacher" / "logits").glob("*-top3-T4/meta.json"))
  assert len(stores) == 1, list((workdir / "teacher" / "logits").iterdir())
  meta = json.loads(stores[0].read_text())
  assert meta["topk"] == 3 and meta["width"] == 4 and meta["temperature"] == 4.0
  sizes = sum(os.path.getsize(stores[0].parent / f) for f in os.listdir(stores[0].parent)
              if f != "meta.json")
  assert sizes == 1294 * (3 + 1) * 2 + 1294 * 3 * 2  # float16 values + int16 class ids
  epochs = [json.loads(l) for l in
            (workdir / "student" / "top3" / "metrics.jsonl").read_text().splitlines()]
  assert all(e["distill_loss"] > 0 for e in epochs)


def test_a_multi_step_execution_traces_each_step_once_and_trains_like_single_steps():
  """steps_per_execution > 1: Keras' own loop traced train_step (and test_step) twice, once to
  learn what the loop carries; the trainer's loop traces each once, and trains exactly as one
  step per call does (same weights, same logs)."""
  from models.compat import keras, tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.random((80, 6)).astype("float32")  # 5 batches: a last call of 1 step (4 + 1)
  y = rng.integers(0, 3, 80)
  teacher_logits = rng.normal(size=(80, 3)).astype("float32")
  keras.utils.set_random_seed(0)
  inputs = keras.Input((6,))
  reference = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, "relu")(inputs)))
  results = {}
  for spe in (1, 4):
    student_model = keras.models.clone_model(reference)
    student_model.set_weights(reference.get_weights())
    trainer = distill.DistillationTrainer(student_model, temperature=2.0, alpha=0.5)
    traced = {"train": 0, "test": 0}
    for kind in traced:
      step = getattr(trainer, kind + "_step")

      def counting(data, step=step, kind=kind):
        traced[kind] += 1
        return step(data)
      setattr(trainer, kind + "_step", counting)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=spe)
    train = tf.data.Dataset.from_tensor_slices((x, (y, teacher_logits))).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:48], y[:48])).batch(16)
    history = trainer.fit(train, validation_data=val, epochs=2, verbose=0)
    results[spe] = (student_model.get_weights(), history.history, traced)
  assert results[4][2] == {"train": 1, "test": 1}, results[4][2]
  for a, b in zip(results[1][0], results[4][0]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for key, values in results[1][1].items():
    np.testing.assert_allclose(values, results[4][1][key], rtol=1e-6)


def test_the_training_functions_convert_nothing_of_tfmot_and_an_online_teacher_keeps_autograph(
    monkeypatch):
  """The trainer's functions run without AutoGraph: converting tfmot's wrappers (pruning and
  QAT) was ~2-4 s of every process's first run (BUILD_NOTES.md, "Pitfall: AutoGraph converts tfmot's
  wrappers in every process"). A teacher run in the
  step keeps AutoGraph: this one's layer has Python control flow on a tensor, which only
  AutoGraph turns into graph ops."""
  from tensorflow.python.autograph.impl import api  # pylint: disable=g-import-not-at-top

  from models.compat import keras, tf  # pylint: disable=g-import-not-at-top
  from pipelines import config as configs  # pylint: disable=g-import-not-at-top
  from pipelines.prune import magnitude  # pylint: disable=g-import-not-at-top

  class Gate(keras.layers.Layer):  # a user's layer: needs AutoGraph inside a tf.function
    def call(self, x):
      if tf.reduce_sum(x) > 0:
        return x
      return -x

  converted = []
  real = api._convert_actual  # pylint: disable=protected-access
  monkeypatch.setattr(api, "_convert_actual", lambda entity, ctx: converted.append(
      getattr(entity, "__module__", "") or "") or real(entity, ctx))
  rng = np.random.default_rng(0)
  x = rng.random((64, 6)).astype("float32")
  y = rng.integers(0, 3, 64)
  inputs = keras.Input((6,))
  teacher_model = keras.Model(inputs, keras.layers.Dense(3)(Gate()(inputs)))
  student_in = keras.Input((6,))
  student_model = keras.Model(student_in, keras.layers.Dense(3)(
      keras.layers.Dense(16, "relu")(student_in)))
  config = configs.PruningConfig(final_sparsity=0.5, begin="0", end="1", frequency=1)
  pruned, _ = magnitude.apply_pruning(student_model, config, config.resolve_steps(4, 2))
  trainer = distill.DistillationTrainer(pruned, teacher=teacher_model, temperature=2.0, alpha=0.5)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=2)
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  history = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
                        validation_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(32),
                        epochs=2, verbose=0,
                        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  assert np.isfinite(history.history["distill_loss"]).all()
  assert not [m for m in converted if m.startswith("tensorflow_model_optimization")], converted
  assert any(m == __name__ for m in converted), converted  # the teacher's Gate layer


def test_logged_losses_weigh_every_example_once():
  """The trainer's loss and val_loss are means over the examples, as evaluate() computes them: a
  short last batch weighs as much as its examples (they were means of the batches' means)."""
  from models.compat import keras, tf
  from pipelines.train import losses
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 4)).astype(np.float32)
  y = rng.integers(0, 3, 5)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
  trainer = distill.DistillationTrainer(model, distill=False)
  trainer.compile(optimizer=keras.optimizers.SGD(0.0))  # the weights stay: one value to expect
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)  # batches of 2, 2 and 1
  per_example = losses.hard_cross_entropy_per_example(y, model(x)).numpy()
  batch_means = np.mean([per_example[:2].mean(), per_example[2:4].mean(), per_example[4:].mean()])
  assert abs(per_example.mean() - batch_means) > 1e-3  # the two readings differ on this data
  history = trainer.fit(ds, validation_data=ds, epochs=1, verbose=0)
  assert history.history["loss"][0] == pytest.approx(per_example.mean(), rel=1e-5)
  assert history.history["val_loss"][0] == pytest.approx(per_example.mean(), rel=1e-5)


def test_agreement_with_the_teacher_is_logged_per_epoch(trained):
  """Top-1 agreement and KL(teacher || student) at T, per epoch (metrics.jsonl, TensorBoard) and
  the last epoch's in metrics.json, for a distilled student; measured on the training batches."""
  workdir, _, _ = trained
  stage = workdir / "student" / "default"
  epochs = [json.loads(l) for l in (stage / "metrics.jsonl").read_text().splitlines()]
  assert all(0.0 <= e["agreement"] <= 1.0 and e["teacher_kl"] >= 0.0 for e in epochs)
  assert epochs[-1]["agreement"] > 0.5  # a student trained on its teacher mostly agrees with it
  metrics = json.loads((stage / "metrics.json").read_text())
  assert metrics["agreement"] == pytest.approx(epochs[-1]["agreement"], abs=1e-5)
  assert metrics["teacher_kl"] == pytest.approx(epochs[-1]["teacher_kl"], abs=1e-5)
  from models.compat import tf
  from pipelines.train import losses
  trainer = distill.DistillationTrainer(
      distill.load_keras_model(str(stage / "model.keras")), temperature=2.0, alpha=0.5)
  s = tf.constant([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  t = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
  parts = trainer.compute_losses(None, tf.constant([0, 1]), t, s)
  kl = losses.soft_kl_per_example(s, t, 2.0).numpy()
  np.testing.assert_allclose(parts["distill"].numpy() / 4.0, kl, rtol=1e-6)  # what teacher_kl logs
