"""Teacher stage end to end on a tiny config, plus its training machinery."""

import json
import math
import os

import numpy as np
import pytest

from models.compat import keras
from pipelines import config as configs
from pipelines.config.errors import ConfigError, StageError
from pipelines.data import bundle as data
from pipelines.runtime import execute as stage
from pipelines.runtime import rundir
from pipelines.stages import teacher
from pipelines.train import distill, optimizers
from tests.conftest import tiny_teacher_config


def _run(config, workdir, force=False):
  return stage.execute("teacher", teacher.run, config, str(workdir),
                       teacher.fingerprint_inputs(config), force=force, log=lambda *_: None)


def test_teacher_trains_saves_and_reports_what_it_saved(tmp_path):
  config = tiny_teacher_config(epochs=4)
  outcome = _run(config, tmp_path)
  assert outcome.ran
  d = tmp_path / "teacher"
  for name in ("model.keras", "metrics.json", "config.json", "metrics.jsonl"):
    assert (d / name).is_file(), name
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["test_accuracy"] > 0.6  # chance is 0.1; a 4-epoch MLP gets ~0.9
  assert metrics["epochs_run"] == 4 and 1 <= metrics["best_epoch"] <= 4
  assert metrics["data"]["num_examples"] == {"train": 1294, "validation": 144, "test": 359}
  assert json.loads((d / "config.json").read_text())["model"]["name"] == "mlp"

  # The saved model is the one measured: reload and re-evaluate on test.
  model = distill.load_keras_model(str(d / "model.keras"))
  bundle = data.load(config.data)
  x, y = next(iter(bundle.batches("test", 1000)))
  acc = float(np.mean(np.argmax(model(x, training=False), axis=-1) == y.numpy()))
  assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-6)

  entry = rundir.RunDir(str(tmp_path)).entry("teacher")
  assert entry["status"] == "done" and entry["artifacts"]["model"] == "teacher/model.keras"
  assert entry["metrics"]["test_accuracy"] == metrics["test_accuracy"]
  assert entry["started"] and entry["finished"] and entry["wall_seconds"] > 0


def test_best_epoch_is_restored_not_the_last(tmp_path):
  # A high constant learning rate makes validation loss bounce, so the best
  # epoch is rarely the last; whichever it is, the saved model must be it.
  config = tiny_teacher_config(epochs=6, learning_rate=0.05, lr_schedule="constant",
                               optimizer="sgd", patience=0)
  _run(config, tmp_path)
  d = tmp_path / "teacher"
  epochs = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
  assert [e["epoch"] for e in epochs] == list(range(1, 7))
  best = min(epochs, key=lambda e: e["val_loss"])
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["best_epoch"] == best["epoch"]
  assert metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)


def test_early_stopping_stops_when_patience_runs_out(tmp_path):
  config = tiny_teacher_config(epochs=40, patience=1, monitor="val_accuracy")
  _run(config, tmp_path)
  metrics = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
  assert metrics["stopped_early"] and metrics["epochs_run"] < 40
  assert metrics["epochs_run"] == metrics["best_epoch"] + 1


def test_diverging_loss_stops_the_stage_and_marks_it_failed(tmp_path):
  config = tiny_teacher_config(optimizer="sgd", learning_rate=1e12, lr_schedule="constant")
  with pytest.raises(StageError) as err:
    _run(config, tmp_path)
  message = str(err.value)
  assert message.startswith("teacher stage: loss is")
  assert "--teacher_learning_rate" in message and "at step" in message
  entry = rundir.RunDir(str(tmp_path)).entry("teacher")
  assert entry["status"] == "failed" and "loss is" in entry["error"]
  assert not (tmp_path / "teacher" / "model.keras").exists()


@pytest.mark.parametrize("overrides,flag", [
    (dict(epochs=0), "--teacher_epochs"),
    (dict(batch_size=0), "--batch_size"),
    (dict(learning_rate=-1.0), "--teacher_learning_rate"),
    (dict(learning_rate=float("nan")), "--teacher_learning_rate"),
    (dict(optimizer="lamb"), "--teacher_optimizer"),
    (dict(lr_schedule="step"), "--teacher_lr_schedule"),
    (dict(warmup_epochs=3.0), "--teacher_warmup_epochs"),
    (dict(patience=-1), "--teacher_patience"),
    (dict(monitor="loss"), "--teacher_monitor"),
])
def test_bad_training_config_is_refused_before_anything_is_written(tmp_path, overrides, flag):
  config = tiny_teacher_config(**overrides)
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match="^" + flag):
    _run(config, workdir)
  assert not workdir.exists()


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_schedules_with_warmup(schedule):
  cfg = configs.TrainConfig(epochs=10, learning_rate=0.1, lr_schedule=schedule,
                             warmup_epochs=1.0, lr_decay_rate=0.5)
  lr = optimizers.make_schedule(cfg, steps_per_epoch=10)
  values = [float(lr(s)) for s in (0, 5, 10, 50, 99)]
  assert values[0] == 0.0 and values[1] == pytest.approx(values[2] / 2, rel=1e-5)
  assert values[2] == pytest.approx(0.1, rel=1e-5)
  if schedule == "constant":
    assert values[3] == pytest.approx(0.1)
  elif schedule == "cosine":
    # Decay spans the 90 steps after warm-up: at step 50, 40/90 of the way.
    assert values[3] == pytest.approx(0.05 * (1 + math.cos(math.pi * 40 / 90)), rel=1e-4)
    assert values[4] < 1e-3
  else:
    assert values[3] == pytest.approx(0.1 * 0.5 ** 4, rel=1e-4)
  # Round-trips through Keras serialization (saved inside model.keras).
  again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
  assert float(again(55)) == pytest.approx(float(lr(55)))


@pytest.mark.parametrize("name,cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")])
def test_optimizers(name, cls):
  opt = optimizers.make_optimizer(configs.TrainConfig(optimizer=name, weight_decay=1e-4), 10)
  assert type(opt).__name__ == cls


def test_atomic_write_leaves_no_partial_file(tmp_path):
  target = tmp_path / "model.keras"
  target.write_text("old")
  with pytest.raises(RuntimeError):
    with rundir.atomic_path(str(target)) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("killed")
  assert target.read_text() == "old"
  assert os.listdir(tmp_path) == ["model.keras"]
