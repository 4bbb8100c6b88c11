"""Dynamic pruning (RigL-style mask revisions): the revision itself, the schedule it keeps, and a
dynamic student through QAT and export."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from models.compat import keras, tf
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.prune import dynamic
from pipelines.prune import magnitude as pruning
from pipelines.runtime import execute as stage
from pipelines.stages import export, qat, student
from pipelines.train import distill
from tests.conftest import tiny_export_config, tiny_qat_config, tiny_student_config


def _revise(weights, mask, grads, fraction):
  new, regrown = dynamic.revise_mask(tf.constant(weights, tf.float32),
                                     tf.constant(mask, tf.float32),
                                     tf.constant(grads, tf.float32), fraction)
  return new.numpy().tolist(), int(regrown)


def test_drops_smallest_active_and_regrows_largest_gradients():
  weights = [0.9, -0.1, 0.5, 0.0, 0.0, 0.3, 0.0, 0.0]
  mask = [1, 1, 1, 0, 0, 1, 0, 0]
  grads = [5.0, 0.0, 0.0, 0.2, -0.8, 0.0, 0.5, 0.1]
  # 4 active, fraction 0.5 -> 2 revised: -0.1 and 0.3 dropped; |-0.8| and 0.5 regrown.
  new, regrown = _revise(weights, mask, grads, 0.5)
  assert new == [1, 0, 1, 0, 1, 0, 1, 0] and regrown == 2
  # A weight dropped now but with the largest gradient comes straight back (not "regrown").
  new, regrown = _revise(weights, mask, [0, 9.0, 0, 0.2, -0.8, 0, 0.5, 0.1], 0.5)
  assert new == [1, 1, 1, 0, 1, 0, 0, 0] and regrown == 1
  # Non-finite gradients (a loss-scale overflow) never win the regrowth.
  new, _ = _revise(weights, mask, [0, 0, 0, float("inf"), float("nan"), 0, 0.5, 0.1], 0.25)
  assert new == [1, 0, 1, 0, 0, 1, 1, 0]
  # Nothing revised at fraction 0; never more than there are pruned weights to regrow.
  assert _revise(weights, mask, grads, 0.0) == (mask, 0)
  new, regrown = _revise([0.9, -0.1, 0.5, 0.4, 0.2, 0.3, 0.6, 0.0], [1, 1, 1, 1, 1, 1, 1, 0],
                         grads, 0.9)
  assert new == [1, 0, 1, 1, 1, 1, 1, 1] and regrown == 1


def test_revision_works_on_conv_kernels_and_keeps_the_count():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
  mask = (rng.random(w.shape) > 0.9).astype(np.float32)
  g = rng.normal(size=w.shape).astype(np.float32)
  new, regrown = dynamic.revise_mask(tf.constant(w * mask), tf.constant(mask), tf.constant(g), 0.3)
  new = new.numpy()
  assert new.shape == w.shape and set(np.unique(new)) <= {0.0, 1.0}
  assert new.sum() == mask.sum()
  k = int(round(0.3 * mask.sum()))
  grown = (new > 0) & (mask == 0)
  assert int(regrown) == grown.sum() and 0 < grown.sum() <= k
  # The regrown weights have the largest |gradient| among the weights that were pruned.
  pruned_g = np.abs(g[mask == 0])
  assert np.abs(g[grown]).min() >= np.sort(pruned_g)[-k]


def test_drop_fraction_decays_along_a_cosine():
  values = [float(dynamic.drop_fraction_at(s, 100, 300, 0.3)) for s in (50, 100, 200, 300, 400)]
  assert values == pytest.approx([0.3, 0.3, 0.15, 0.0, 0.0], abs=1e-6)


def _tiny_pruned(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((16,))
  x = keras.layers.Dense(64, activation="relu", name="dense_1")(inputs)
  outputs = keras.layers.Dense(4, name="logits")(x)
  return keras.Model(inputs, outputs)


def test_sparsity_equals_the_schedule_after_every_revision():
  config = configs.PruningConfig(final_sparsity=0.8, begin="2", end="40", frequency=6,
                                 keep_dense=(), method="dynamic", mask_update_every=4,
                                 mask_update_end="60")
  steps = config.resolve_steps(10, 8)
  pruned, _ = pruning.apply_pruning(_tiny_pruned(), config, steps)
  revision = dynamic.MaskRevision(pruned, steps["mask_update_begin"], steps["mask_update_end"],
                                  steps["mask_update_every"], config.drop_fraction)
  trainer = distill.DistillationTrainer(pruned, distill=False, mask_revision=revision)
  trainer.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=1)
  schedule = pruning.make_schedule(config, steps)
  layers = pruning.pruned_layers(pruned)
  seen = []

  class Record(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      masks = {l.layer.name: l.pruning_vars[0][1].numpy().copy() for l in layers}
      seen.append((pruning.pruning_step(pruned), int(revision.revisions.numpy()), masks))

  rng = np.random.default_rng(1)
  x = rng.normal(size=(640, 16)).astype(np.float32)
  y = (x[:, :4].argmax(axis=1)).astype(np.int64)
  trainer.fit(x, y, batch_size=64, epochs=8, verbose=0,
              callbacks=[tfmot_update_step(), Record()])

  updates = [t for t in range(1, 81) if bool(schedule(tf.constant(t, tf.int64))[0])]
  revised_at = [s for (s, r, _), (_, r0, _) in zip(seen[1:], seen) if r > r0]
  # tfmot's schedule ends at step 38 (begin 2 + 6 x 6); revisions own the mask after it:
  # steps 42, 46, ..., 58 (before issue 17's fix they ran from begin: 6, 10, ..., 58).
  assert steps["mask_update_begin"] == steps["end_step"] == 38
  assert revised_at == [t for t in range(42, 60, 4)]
  changed_by_revision = 0
  for (step, _, masks), (_, _, before) in zip(seen[1:], seen):
    last_update = max(t for t in updates if t <= step)
    expected = float(schedule(tf.constant(last_update, tf.int64))[1])
    for name, mask in masks.items():
      assert int(mask.sum()) == max(1, int(round(mask.size * (1 - expected)))), (step, name)
    if step in revised_at and step not in updates:
      changed_by_revision += sum(int(np.sum(masks[n] != before[n])) for n in masks)
  assert changed_by_revision > 0
  report = revision.report()
  assert report["mask_revisions"] == len(revised_at) and report["regrown_total"] > 0
  assert set(report["regrown_per_layer"]) == {"dense_1", "logits"}


def tfmot_update_step():
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  return tfmot.sparsity.keras.UpdatePruningStep()


_MIRRORED = textwrap.dedent("""
    from models.compat import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import tensorflow_model_optimization as tfmot
    from pipelines import config as configs
    from pipelines.train import distill
    from pipelines.prune import dynamic
    from pipelines.prune import magnitude as pruning
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = configs.PruningConfig(final_sparsity=0.8, begin="2", end="40", frequency=6,
                                   keep_dense=(), method="dynamic", mask_update_every=4,
                                   mask_update_end="60")
    steps = config.resolve_steps(10, 8)
    with strategy.scope():
      keras.utils.set_random_seed(0)
      inputs = keras.Input((16,))
      x = keras.layers.Dense(64, activation="relu", name="dense_1")(inputs)
      pruned, _ = pruning.apply_pruning(
          keras.Model(inputs, keras.layers.Dense(4, name="logits")(x)), config, steps)
      revision = dynamic.MaskRevision(pruned, steps["mask_update_begin"], steps["mask_update_end"],
                                      4, 0.3)
      trainer = distill.DistillationTrainer(pruned, distill=False, mask_revision=revision)
      trainer.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(640, 16)).astype(np.float32)
    trainer.fit(x, x[:, :4].argmax(1), batch_size=64, epochs=8, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    for layer in pruning.pruned_layers(pruned):
      replicas = [v.numpy() for v in layer.pruning_vars[0][1].values]
      assert len(replicas) == 2 and all(np.array_equal(replicas[0], r) for r in replicas)
      assert set(np.unique(replicas[0])) <= {0.0, 1.0}
      assert abs(1 - replicas[0].mean() - 0.8) < 0.005, replicas[0].mean()
    report = revision.report()
    # Revisions at 42, 46, ..., 58: after tfmot's schedule ends at step 38.
    assert report["mask_revisions"] == 5 and report["regrown_total"] > 0, report
    assert 0 < report["regrown_surviving"] <= report["regrown_total"], report
    print("OK", report)
""")


@pytest.mark.slow
def test_revisions_under_a_mirrored_strategy_keep_replicas_identical():
  """Two CPU replicas: gradients summed before the revision, one mask written to both."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
  done = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=repo, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("changes, message", [
    (dict(structure="m_by_n", final_sparsity=None), "unstructured only"),
    (dict(drop_fraction=1.0), "--drop_fraction=1.0 must be in (0, 1)"),
    (dict(mask_update_every=0), "--mask_update_every=0 must be >= 1"),
    (dict(mask_update_end="soon"), "--mask_update_end=soon must be a step"),
])
def test_bad_dynamic_settings_are_refused(changes, message):
  config = configs.PruningConfig(method="dynamic", **changes)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config.validate()


def test_revisions_that_could_never_run_are_refused():
  config = configs.PruningConfig(method="dynamic", begin="0.5", mask_update_end="0.55",
                                 mask_update_every=100)
  config.validate()
  with pytest.raises(ConfigError, match="leaves no mask revision"):
    config.resolve_steps(100, 10)
  with pytest.raises(ConfigError, match="after the 1000 planned steps"):
    configs.PruningConfig(method="dynamic", mask_update_end="1500").resolve_steps(100, 10)
  # Revisions begin where tfmot's schedule ends (step 750): the first is at 850, before the end.
  with pytest.raises(ConfigError, match=r"leaves no mask revision after the pruning schedule "
                                        r"reaches its final sparsity \(--pruning_end, step 750\)"):
    configs.PruningConfig(method="dynamic", end="0.75", mask_update_end="850").resolve_steps(
        100, 10)
  steps = configs.PruningConfig(method="dynamic", end="0.75", mask_update_end="851").resolve_steps(
      100, 10)
  assert steps["mask_update_begin"] == steps["end_step"] == 750
  assert configs.PruningConfig(method="dynamic").resolve_steps(100, 10)["mask_update_end"] == 900


def test_revisions_refuse_a_schedule_that_still_updates_the_mask():
  config = configs.PruningConfig(final_sparsity=0.8, begin="2", end="40", frequency=6,
                                 keep_dense=(), method="dynamic", mask_update_every=4,
                                 mask_update_end="60")
  steps = config.resolve_steps(10, 8)
  pruned, _ = pruning.apply_pruning(_tiny_pruned(), config, steps)
  with pytest.raises(ValueError, match="updates its mask until step 38, after the mask revisions "
                                       "begin \\(step 2\\)"):
    dynamic.MaskRevision(pruned, steps["begin_step"], steps["mask_update_end"], 4, 0.3)


def test_magnitude_runs_keep_their_fingerprint():
  assert "method" not in configs.resolved(configs.PruningConfig())
  assert configs.resolved(configs.PruningConfig(method="dynamic"))["method"] == "dynamic"


@pytest.mark.slow
def test_dynamic_student_through_qat_and_export(finished_run):
  workdir, _, _ = finished_run
  name = "dynamic"
  config = tiny_student_config(name=name, epochs=4, method="dynamic", mask_update_every=5,
                               mask_update_end="0.9")
  outcome = stage.execute(config.stage, student.run, config, str(workdir),
                          student.fingerprint_inputs(config, str(workdir)), log=lambda *_: None)
  metrics = outcome.entry["metrics"]
  assert metrics["pruning_method"] == "dynamic"
  assert metrics["mask_revisions"] > 0 and metrics["regrown_total"] > 0
  assert 0 < metrics["regrown_surviving"] <= metrics["regrown_total"]
  assert sum(metrics["regrown_surviving_per_layer"].values()) == metrics["regrown_surviving"]
  assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(
      str(workdir / "student" / name / "tb" / "train"), size_guidance={"tensors": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  assert {"mask_revision/regrown", "mask_revision/regrown/dense_1",
          "mask_revision/drop_fraction"} <= tags, tags
  qconfig = tiny_qat_config(name=name)
  stage.execute(qconfig.stage, qat.run, qconfig, str(workdir),
                qat.fingerprint_inputs(qconfig, str(workdir)), log=lambda *_: None)
  econfig = tiny_export_config(name=name)
  stage.execute(econfig.stage, export.run, econfig, str(workdir),
                export.fingerprint_inputs(econfig, str(workdir)), log=lambda *_: None)
  report = json.loads((workdir / "export" / name / "report.json").read_text())
  product = [m for m in report["models"] if m["name"] == "student_qat_int8"][0]
  pruned = json.loads((workdir / "student" / name / "metrics.json").read_text())
  zeros = sum(e["zeros"] for e in pruned["pruning"]["layers"].values())
  assert product["weight_zeros"] >= zeros and product["test_accuracy"] > 0.5


def _train_recording(config, epochs=8, steps_per_epoch=10):
  """Trains the tiny pruned model with revisions (as the student stage does) and records every
  step: ``(steps, schedule, revision, seen)``, ``seen[i] = (step, revisions, {layer: mask})``,
  ``seen[0]`` before the first step."""
  steps = config.resolve_steps(steps_per_epoch, epochs)
  pruned, _ = pruning.apply_pruning(_tiny_pruned(), config, steps)
  revision = dynamic.MaskRevision(pruned, steps["mask_update_begin"], steps["mask_update_end"],
                                  steps["mask_update_every"], config.drop_fraction)
  trainer = distill.DistillationTrainer(pruned, distill=False, mask_revision=revision)
  trainer.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=1)
  layers = pruning.pruned_layers(pruned)
  seen = []

  class Record(keras.callbacks.Callback):
    def record(self):
      masks = {l.layer.name: l.pruning_vars[0][1].numpy().copy() for l in layers}
      seen.append((max(0, pruning.pruning_step(pruned)), int(revision.revisions.numpy()), masks))

    def on_train_begin(self, logs=None):
      self.record()

    def on_train_batch_end(self, batch, logs=None):
      self.record()

  rng = np.random.default_rng(1)
  x = rng.normal(size=(64 * steps_per_epoch, 16)).astype(np.float32)
  trainer.fit(x, x[:, :4].argmax(axis=1).astype(np.int64), batch_size=64, epochs=epochs,
              verbose=0, callbacks=[tfmot_update_step(), Record()])
  return steps, pruning.make_schedule(config, steps), revision, seen


def test_regrown_weights_survive_the_following_magnitude_update():
  """One owner of the mask at any step: a weight regrown by a revision is not pruned again by
  tfmot's next magnitude update (regrown weights start at zero, so it would be), and
  ``regrown_surviving`` counts the regrown weights still active at the end."""
  config = configs.PruningConfig(final_sparsity=0.8, begin="2", end="40", frequency=6,
                                 keep_dense=(), method="dynamic", mask_update_every=4,
                                 mask_update_end="60")
  steps, schedule, revision, seen = _train_recording(config)
  updates = [t for t in range(1, 81) if bool(schedule(tf.constant(t, tf.int64))[0])]
  by_step = {step: masks for step, _, masks in seen}
  pruned_again, revised_at = [], []
  grown = {name: np.zeros(m.shape, bool) for name, m in seen[0][2].items()}
  for (step, count, masks), (_, count0, before) in zip(seen[1:], seen):
    revised = count > count0
    if revised:
      revised_at.append(step)
    for name, mask in masks.items():
      new = (mask > 0) & (before[name] == 0)
      if revised and step not in updates:  # the regrowth of this revision alone
        later = [t for t in updates if t > step]
        if later and new.any():
          lost = int(np.sum(by_step[later[0]][name][new] == 0))
          if lost:
            pruned_again.append("%s: %d of %d regrown at step %d pruned by the magnitude update "
                                "at step %d" % (name, lost, int(new.sum()), step, later[0]))
      grown[name] = ((grown[name] | new) if revised else grown[name]) & (mask > 0)
  assert revised_at, "no revision ran"
  assert not pruned_again, "; ".join(pruned_again)
  # One owner: tfmot's last mask update comes before the first revision.
  assert max(updates) < min(revised_at), (updates, revised_at)
  surviving = {name: int(g.sum()) for name, g in grown.items()}
  report = revision.report()
  assert report["regrown_surviving_per_layer"] == surviving
  assert 0 < report["regrown_surviving"] == sum(surviving.values()) <= report["regrown_total"]
  # The end is the target sparsity, the schedule's last value.
  final = float(schedule(tf.constant(max(updates), tf.int64))[1])
  assert final == pytest.approx(0.8)
  for name, mask in seen[-1][2].items():
    assert int(mask.sum()) == int(round(mask.size * 0.2)), name
