"""The teacher-output store (pipelines/train/teacher_store.py) and the top-k + rest-bucket loss."""

import os

import numpy as np
import pytest

from models.compat import keras, tf
from pipelines.data import bundle as data
from pipelines.runtime import distribute
from pipelines.train import distill, losses, teacher_store

T = 3.0


@pytest.fixture(scope="module")
def bundle():
  return data.load(data.DataConfig(train_examples=300))


@pytest.fixture(scope="module")
def teacher(bundle):
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.layers.Flatten(input_shape=bundle.input_shape),
                            keras.layers.Dense(bundle.num_classes)])
  # Wide logits, so that float16 rounding and the top-k cut are both exercised.
  model.layers[-1].kernel.assign(model.layers[-1].kernel * 8.0)
  return model


def _first_batch(ds):
  x, (y, extra) = next(iter(ds))
  return x, y, extra


def _student(x, classes):
  rng = np.random.default_rng(0)
  return tf.constant(rng.normal(size=(int(x.shape[0]), classes)) * 3.0, tf.float32)


def test_store_streams_with_its_examples_and_gives_the_in_memory_loss(bundle, teacher, tmp_path):
  store = teacher_store.open_or_write(str(tmp_path / "full"), teacher, bundle, 128, 0, T)
  n, c = bundle.num_examples["train"], bundle.num_classes
  assert store.nbytes() == n * c * 2  # float16, N x C
  logits = distill.teacher_logits(teacher, bundle, 128)
  np.testing.assert_allclose(store.arrays().astype(np.float32), logits, rtol=1e-3, atol=1e-2)
  on_disk = bundle.batches("train", 64, shuffle=True, seed=5, extras=store.dataset())
  in_memory = distill.with_teacher_logits(bundle, logits, 64, seed=5)
  x, y, t_disk = _first_batch(on_disk)
  x2, _, t_mem = _first_batch(in_memory)
  np.testing.assert_array_equal(x.numpy(), x2.numpy())  # the same shuffle
  # Shuffled after zipping: each example still carries its own teacher output.
  np.testing.assert_allclose(t_disk.numpy().astype(np.float32),
                             teacher(x, training=False).numpy(), rtol=1e-3, atol=1e-2)
  s = _student(x, c)
  disk = losses.distillation_loss(s, t_disk, y, T, 0.3)
  mem = losses.distillation_loss(s, t_mem, y, T, 0.3)
  for part in ("total", "distill", "hard"):
    assert float(disk[part]) == pytest.approx(float(mem[part]), rel=2e-3, abs=1e-4)
  # Written once: a second open reads the store (no teacher needed).
  again = teacher_store.open_or_write(str(tmp_path / "full"), None, bundle, 128, 0, T)
  assert again.meta == store.meta


def _coarse_kl(s, z, k, t):
  """The reference: KL over the teacher's top-k classes and one rest bucket, in float64."""
  def log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))
  lp, lq = log_softmax(z / t), log_softmax(s / t)
  top = np.argsort(-z, axis=1)[:, :k]
  p, q = np.exp(lp), np.exp(lq)
  p_top, q_top = np.take_along_axis(p, top, 1), np.take_along_axis(q, top, 1)
  p_c = np.concatenate([p_top, 1 - p_top.sum(1, keepdims=True)], 1)
  q_c = np.concatenate([q_top, 1 - q_top.sum(1, keepdims=True)], 1)
  return float(np.mean(np.sum(p_c * (np.log(p_c) - np.log(q_c)), axis=1)))


def test_topk_store_size_and_loss(bundle, teacher, tmp_path):
  n, c, k = bundle.num_examples["train"], bundle.num_classes, 3
  store = teacher_store.open_or_write(str(tmp_path / "top3"), teacher, bundle, 128, k, T)
  assert store.topk == k and store.meta["temperature"] == T
  assert store.nbytes() == n * (k + 1) * 2 + n * k * 2  # float16 values + int16 class ids
  x, y, (values, classes) = _first_batch(
      bundle.batches("train", 64, shuffle=True, seed=2, extras=store.dataset()))
  z = teacher(x, training=False).numpy().astype(np.float64)
  np.testing.assert_array_equal(classes.numpy(), np.argsort(-z, axis=1)[:, :k])
  s = _student(x, c)
  got = float(losses.distillation_loss(s, (values, classes), y, T, 0.0)["distill"])
  want = T * T * _coarse_kl(s.numpy().astype(np.float64), z, k, T)
  assert got == pytest.approx(want, rel=5e-3)
  full = float(losses.distillation_loss(s, z, y, T, 0.0)["distill"])
  assert got < full  # coarsening loses information (data-processing inequality)


def test_topk_of_all_classes_is_the_full_store_and_c_minus_1_the_full_loss(bundle, teacher,
                                                                           tmp_path):
  c = bundle.num_classes
  assert teacher_store.topk_for(c, c) == 0 and teacher_store.topk_for(c + 5, c) == 0
  assert teacher_store.store_path("base", 0, T) == "base"
  every = teacher_store.open_or_write(str(tmp_path / "all"), teacher, bundle, 128,
                                      teacher_store.topk_for(c, c), T)
  assert every.topk == 0 and every.nbytes() == bundle.num_examples["train"] * c * 2
  store = teacher_store.open_or_write(str(tmp_path / "c1"), teacher, bundle, 128, c - 1, T)
  x, y, (values, classes) = _first_batch(
      bundle.batches("train", 64, seed=0, extras=store.dataset()))
  s = _student(x, c)
  z = teacher(x, training=False)
  trainer = distill.DistillationTrainer(keras.Sequential(), temperature=T, alpha=0.2)
  topk = trainer.compute_losses(x, y, (values, classes), s)
  full = trainer.compute_losses(x, y, z, s)
  for part in ("total", "distill", "hard"):  # a one-class rest bucket loses nothing
    assert float(np.mean(topk[part])) == pytest.approx(float(np.mean(full[part])), rel=2e-3,
                                                       abs=1e-4)


def test_each_worker_writes_only_its_own_shard(bundle, teacher, tmp_path, monkeypatch):
  n, c = bundle.num_examples["train"], bundle.num_classes
  path = str(tmp_path / "sharded")
  seen = tf.Variable(0)

  def counting(x, training=False):
    seen.assign_add(tf.shape(x)[0])
    return teacher(x, training=training)
  entry = teacher_store.write_shard(path, counting, bundle, 64, 0, T, index=1, count=2)
  assert entry["start"] == n // 2 and entry["count"] == n - n // 2
  assert int(seen.numpy()) == n - n // 2  # the teacher saw this worker's examples only
  assert os.path.getsize(os.path.join(path, entry["values"])) == (n - n // 2) * c * 2
  monkeypatch.setattr(distribute, "worker_index_and_count", lambda: (0, 2))
  store = teacher_store.open_or_write(path, teacher, bundle, 64, 0, T)  # worker 0, the chief
  assert [s["count"] for s in store.meta["shards"]] == [n // 2, n - n // 2]
  monkeypatch.undo()
  single = teacher_store.open_or_write(str(tmp_path / "single"), teacher, bundle, 64, 0, T)
  np.testing.assert_array_equal(store.arrays(), single.arrays())


@pytest.mark.parametrize("kwargs,call,message", [
    ({"teacher_topk": -1}, "validate", "--teacher_topk=-1 must be >= 0"),
    ({"teacher_topk": 5, "teacher_outputs": "online"}, "validate",
     "--teacher_topk is for cached teacher outputs"),
    ({"teacher_topk": 5}, "regression", "--teacher_topk is for classification"),
    ({"teacher_topk": 5}, "augment", "--teacher_topk with --student_augment=shift"),
])
def test_teacher_topk_errors_are_one_line(kwargs, call, message):
  from pipelines.config import ConfigError, DistillConfig, resolved
  config = DistillConfig(**kwargs)
  with pytest.raises(ConfigError, match=message):
    if call == "validate":
      config.validate()
    elif call == "regression":
      config.check_task("regression")
    else:
      config.check_augment("shift", "--student_augment")
  assert "teacher_topk" not in resolved(DistillConfig())  # old fingerprints hold


def test_a_truncated_store_is_written_again(bundle, teacher, tmp_path):
  path = str(tmp_path / "store")
  store = teacher_store.open_or_write(path, teacher, bundle, 128, 0, T)
  before, values = store.arrays(), store.files("values")[0]
  with open(values, "r+b") as f:
    f.truncate(100)
  assert teacher_store.open_store(path, bundle.num_examples["train"], bundle.num_classes, 0,
                                  T) is None
  again = teacher_store.open_or_write(path, teacher, bundle, 128, 0, T)
  np.testing.assert_array_equal(again.arrays(), before)


def test_logits_beyond_float16_are_shifted_with_a_line_not_stored_as_inf(bundle, tmp_path,
                                                                          capsys):
  keras.utils.set_random_seed(2)
  loud = keras.Sequential([keras.layers.Flatten(input_shape=bundle.input_shape),
                           keras.layers.Dense(bundle.num_classes)])
  # Logits beyond 65504 (an offset common to the classes, as an unnormalized head can have).
  loud.layers[-1].kernel.assign(loud.layers[-1].kernel * 8.0)
  loud.layers[-1].bias.assign(loud.layers[-1].bias + 80000.0)
  store = teacher_store.open_or_write(str(tmp_path / "loud"), loud, bundle, 128, 0, T)
  values = store.arrays().astype(np.float32)
  assert np.all(np.isfinite(values))
  assert "beyond float16's range" in capsys.readouterr().out
  z = distill.teacher_logits(loud, bundle, 128)
  assert np.abs(z).max() > teacher_store.FLOAT16_MAX  # the case is real
  # The softmax the student learns from is the teacher's (float16 keeps ~3 digits).
  np.testing.assert_allclose(tf.nn.softmax(values / T).numpy(), tf.nn.softmax(z / T).numpy(),
                             atol=2e-3)


def test_a_full_store_makes_no_class_file_another_writer_could_remove(bundle, teacher, tmp_path,
                                                                       monkeypatch):
  """Two writers of one store at once (kdprune-search --parallel): each made an empty class-id
  file and removed it; the second removal found nothing and failed."""
  remove = os.remove

  def other_writer_was_first(path, *args, **kwargs):
    if os.path.basename(path).startswith("classes-"):
      raise FileNotFoundError(path)
    return remove(path, *args, **kwargs)

  monkeypatch.setattr(os, "remove", other_writer_was_first)
  entry = teacher_store.write_shard(str(tmp_path / "race"), teacher, bundle, 128, 0, T)
  assert entry["count"] == bundle.num_examples["train"]
  assert not [f for f in os.listdir(tmp_path / "race") if f.startswith("classes-")]
