"""``digits``: the 8x8 handwritten digits that scikit-learn bundles, as a TFDS dataset.

The 1,797 images (UCI "Optical Recognition of Handwritten Digits", test part;
E. Alpaydin and C. Kaynak, 1998; CC BY 4.0) are embedded in this package as
``digits.npz`` (45 KB), so kdprune's default dataset needs no network and no
scikit-learn. The builder turns them into a standard TFDS dataset: ``image``
(8x8x1 uint8, the original 0..16 grey levels rescaled to 0..255) and ``label``
(10 classes), with a fixed stratified 80/20 train/test split.

Example:
  >>> import tensorflow_datasets as tfds
  >>> import pipelines.data.datasets  # registers "digits"
  >>> ds = tfds.load("digits", split="train", as_supervised=True)  # doctest: +SKIP
"""

import os

import numpy as np
import tensorflow_datasets as tfds

_EMBEDDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0

_CITATION = """@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}"""


def load_embedded():
  """Returns the embedded ``(images uint8 [N, 8, 8] in 0..16, labels uint8 [N])``."""
  with np.load(_EMBEDDED, allow_pickle=False) as data:
    return data["images"], data["labels"]


def stratified_split(labels, test_fraction=_TEST_FRACTION, seed=_SPLIT_SEED):
  """Deterministic stratified split: returns sorted ``(train_idx, test_idx)``."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for cls in np.unique(labels):
    idx = np.flatnonzero(labels == cls)
    rng.shuffle(idx)
    n_test = int(round(len(idx) * test_fraction))
    test.extend(idx[:n_test])
    train.extend(idx[n_test:])
  return np.sort(np.asarray(train)), np.sort(np.asarray(test))


class Digits(tfds.core.GeneratorBasedBuilder):
  """UCI optdigits 8x8 images (scikit-learn's ``load_digits``), embedded in kdprune."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "1,438 train / 359 test, stratified, seed 0; pixels rescaled 0..16 -> 0..255.",
  }

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "8x8 handwritten digits (UCI optdigits, the 1,797 images bundled with "
            "scikit-learn), embedded in kdprune so it needs no download."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation=_CITATION,
        license="CC BY 4.0",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with the package.
    images, labels = load_embedded()
    train_idx, test_idx = stratified_split(labels)
    return {
        "train": self._generate_examples(images, labels, train_idx),
        "test": self._generate_examples(images, labels, test_idx),
    }

  def _generate_examples(self, images, labels, indices):
    scaled = np.round(images.astype(np.float32) * (255.0 / 16.0)).astype(np.uint8)
    for i in indices:
      yield int(i), {"image": scaled[i][..., None], "label": int(labels[i])}
