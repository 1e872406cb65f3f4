"""stnkit plugin: image data sets (``cifar10``, ``fashion-mnist``) and Self-Tuning CNNs
(``stn-alexnet``, ``stn-cnn``)."""

from __future__ import annotations

from stnkit_cnn.data import CIFAR10Data, FashionMNISTData, read_cifar10, read_fashion_mnist
from stnkit_cnn.model import STNAlexNet, STNSmallCNN

__all__ = [
    "CIFAR10Data",
    "FashionMNISTData",
    "STNAlexNet",
    "STNSmallCNN",
    "read_cifar10",
    "read_fashion_mnist",
]
