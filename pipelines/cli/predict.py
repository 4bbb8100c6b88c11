"""``kdprune-predict``: serve an export from its files (``python -m pipelines.cli.predict``).

  kdprune-predict --model=runs/quickstart/export/default --input=digits.npz --output=out.csv

``--model`` is a ``.tflite`` (or the export folder) with ``preprocessing.json`` beside it (else
the record embedded in the file's metadata);
``--input`` holds raw inputs: an ``.npz`` (array ``x`` or ``x_test``), a CSV with the training
feature columns (by name; other columns are ignored), an image file or a folder of images. See
:mod:`pipelines.export.predict`. Bad input: one line, exit 2, nothing written.
"""

import json

from pipelines.cli import app
from pipelines.cli import flags as kflags


def main(argv):
  del argv
  from pipelines.export import predict  # pylint: disable=g-import-not-at-top
  f = kflags.FLAGS
  summary = predict.predict(f.model, f.input, f.output, batch_size=f.predict_batch_size)
  print(json.dumps(summary))


def entry_point():
  kflags.define_predict_flags()
  for name in ("model", "input", "output"):
    kflags.flags.mark_flag_as_required(name)
  app.run(main, "kdprune-predict")


if __name__ == "__main__":
  entry_point()
