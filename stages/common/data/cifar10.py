"""Facts about CIFAR-10 that several modules need, defined once."""

from __future__ import annotations

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)
IMAGES_PER_CLASS = {"train": 5000, "test": 1000}

# Per-channel mean and std of the official training set (0..1 scale): the normalisation of
# models trained from scratch and the reference that `validate` measures drift against.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
