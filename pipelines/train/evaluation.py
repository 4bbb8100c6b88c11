"""Measuring a Keras model over batches: the figures every stage reports."""

from models.compat import tf


def evaluate_classifier(model, batches) -> dict:
  """Accuracy and mean cross-entropy of a logits ``model`` over ``(x, y)`` batches."""
  correct = total = 0
  loss_sum = 0.0
  for x, y in batches:
    logits = model(x, training=False)
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    correct += int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y),
                                         tf.int32)))
    loss_sum += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=tf.cast(logits, tf.float32))))
    total += int(y.shape[0])
  return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total)}


def evaluate_regressor(model, batches, loss: str = "mse") -> dict:
  """MSE and MAE of a regression ``model`` over ``(x, y)`` batches; ``loss`` is the one named."""
  sq = ab = 0.0
  count = 0
  for x, y in batches:
    pred = tf.cast(model(x, training=False), tf.float32)
    diff = pred - tf.reshape(tf.cast(y, tf.float32), tf.shape(pred))
    sq += float(tf.reduce_sum(tf.square(diff)))
    ab += float(tf.reduce_sum(tf.abs(diff)))
    count += int(tf.size(diff))
  mse, mae = sq / max(1, count), ab / max(1, count)
  return {"mse": mse, "mae": mae, "loss": mse if loss == "mse" else mae}


def evaluate(model, batches, data_config) -> dict:
  """:func:`evaluate_classifier` or :func:`evaluate_regressor`, by ``data_config.task``."""
  if data_config.regression:
    return evaluate_regressor(model, batches, data_config.regression_loss)
  return evaluate_classifier(model, batches)
