"""TFDS builders that ship with kdprune (importing this module registers them)."""

from pipelines.datasets.digits import Digits  # noqa: F401
