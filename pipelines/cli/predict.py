"""``kdprune-predict``: serve an export from its files (``python -m pipelines.cli.predict``).

  kdprune-predict --model=runs/quickstart/export/default --input=digits.npz --output=out.csv
  kdprune-predict --model=runs/quickstart/export/default --input=photo.png   # CSV to stdout

``--model`` is a ``.tflite`` (or the export folder) with ``preprocessing.json`` beside it (else
the record embedded in the file's metadata);
``--input`` holds raw inputs: an ``.npz`` (array ``x`` or ``x_test``), a CSV with the training
feature columns (by name; other columns are ignored), an image file or a folder of images. See
:mod:`pipelines.export.predict`. Bad input: one line, exit 2, nothing written.
"""

import json
import sys

from pipelines.cli import app
from pipelines.cli import flags as kflags


def main(argv):
  del argv
  # Here, not at the top: the flags are checked before TensorFlow loads.
  from pipelines.export import predict  # pylint: disable=g-import-not-at-top
  f = kflags.FLAGS
  summary = predict.predict(f.model, f.input, f.output or "", batch_size=f.predict_batch_size)
  # The CSV on standard output (no --output) is followed by nothing else there.
  print(json.dumps(summary), file=sys.stdout if f.output else sys.stderr)


def entry_point():
  kflags.define_predict_flags()
  for name in ("model", "input"):
    kflags.flags.mark_flag_as_required(name)
  app.run(main, "kdprune-predict")


if __name__ == "__main__":
  entry_point()
