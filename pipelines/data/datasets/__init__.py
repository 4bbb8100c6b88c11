"""TFDS builders that ship with kdprune (importing this module registers them)."""

from pipelines.data.datasets.digits import Digits  # noqa: F401
