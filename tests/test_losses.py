"""Distillation loss against values worked out by hand."""

import math

import numpy as np
import pytest

from pipelines.train import losses

S = np.array([[2.0, 0.0]], np.float32)  # student logits
T = np.array([[0.0, 2.0]], np.float32)  # teacher logits
Y = np.array([1])                       # label


def _f(x):
  return float(x)


def test_kl_at_temperature_one():
  # softmax([0, 2]) = [0.1192, 0.8808]; softmax([2, 0]) = [0.8808, 0.1192]
  # KL = 0.1192 ln(0.1192/0.8808) + 0.8808 ln(0.8808/0.1192) = 2 (0.8808 - 0.1192) = 1.5232
  parts = losses.distillation_loss(S, T, Y, temperature=1.0, alpha=0.0)
  assert _f(parts["distill"]) == pytest.approx(1.5232, abs=1e-4)
  assert _f(parts["total"]) == pytest.approx(1.5232, abs=1e-4)


def test_temperature_two_scales_by_t_squared():
  # T = 2: softmax([0, 1]) = [0.2689, 0.7311]; KL = (0.7311 - 0.2689) * ln(0.7311/0.2689)
  # = 0.4621 * 1 = 0.4621; times T^2 = 4 -> 1.8485
  parts = losses.distillation_loss(S, T, Y, temperature=2.0, alpha=0.0)
  assert _f(losses.soft_kl(S, T, 2.0)) == pytest.approx(0.4621, abs=1e-4)
  assert _f(parts["distill"]) == pytest.approx(1.8485, abs=1e-3)


def test_t_squared_keeps_the_soft_term_on_one_scale_at_high_temperature():
  # Hinton et al.: for T large, T^2 * KL tends to a T-independent limit
  # (sum of squared centred logit differences / (2 N)); without T^2 it shrinks as 1/T^2.
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(8, 10)).astype(np.float32), rng.normal(size=(8, 10)).astype(np.float32)
  d8 = _f(losses.distillation_loss(s, t, np.zeros(8), 8.0, 0.0)["distill"])
  d32 = _f(losses.distillation_loss(s, t, np.zeros(8), 32.0, 0.0)["distill"])
  diff = (t - t.mean(1, keepdims=True)) - (s - s.mean(1, keepdims=True))
  limit = float(np.mean(np.sum(diff ** 2, axis=1)) / (2 * 10))
  assert d32 == pytest.approx(limit, rel=0.02)
  assert d8 == pytest.approx(d32, rel=0.15)
  assert _f(losses.soft_kl(s, t, 32.0)) == pytest.approx(d32 / 32 ** 2, rel=1e-5)


def test_alpha_one_is_the_hard_label_loss():
  # cross-entropy of label 1 under softmax([2, 0]) = -ln(0.1192) = 2.1269
  parts = losses.distillation_loss(S, T, Y, temperature=4.0, alpha=1.0)
  assert _f(parts["total"]) == pytest.approx(2.1269, abs=1e-4)
  assert _f(parts["hard"]) == pytest.approx(2.1269, abs=1e-4)


def test_alpha_blends_the_two_parts():
  parts = losses.distillation_loss(S, T, Y, temperature=1.0, alpha=0.25)
  assert _f(parts["total"]) == pytest.approx(0.75 * 1.5232 + 0.25 * 2.1269, abs=1e-4)


def test_identical_logits_have_no_distillation_loss_and_batches_are_averaged():
  x = np.array([[1.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
  assert _f(losses.soft_kl(x, x, 3.0)) == pytest.approx(0.0, abs=1e-7)
  pair = losses.soft_kl(np.concatenate([S, S]), np.concatenate([T, S]), 1.0)
  assert _f(pair) == pytest.approx(1.5232 / 2, abs=1e-4)
  assert math.isfinite(_f(losses.hard_cross_entropy([0, 1], x)))
