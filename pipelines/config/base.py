"""What every config shares: seeds and the resolved form used by manifests and fingerprints.

Imports no TensorFlow (nothing in :mod:`pipelines.config` does).
"""

import dataclasses

SEED_RANGE = "[0, 2**32)"  # what numpy's and TensorFlow's global seeds accept


def is_seed(value: int) -> bool:
  """Whether ``value`` can seed every random generator a stage uses (see SEED_RANGE)."""
  return 0 <= value < 2**32


def resolved(config) -> dict:
  """``dataclasses.asdict(config)`` for manifests and fingerprints, minus the fields a config class
  lists in ``LATER_FIELDS`` while they hold their default.

  Fields added in a later kdprune version must not change the fingerprint of a
  run that does not use them, or upgrading would retrain every finished stage.
  Fields in ``RUNTIME_FIELDS`` (how, not what, is computed: e.g. where decoded
  examples are cached) are always left out, and paths are made absolute (a config's
  ``absolute_paths()``), so ``--data_dir=../data`` and the same directory spelled from ``/``
  give one fingerprint.
  """
  out = dataclasses.asdict(config)
  if hasattr(config, "absolute_paths"):  # a path spelled two ways is the same file
    out.update(config.absolute_paths())
  for field in getattr(config, "RUNTIME_FIELDS", ()):
    out.pop(field, None)
  for field in getattr(config, "LATER_FIELDS", ()):
    default = type(config).__dataclass_fields__[field].default
    if getattr(config, field) == default:
      out.pop(field, None)
  return out
