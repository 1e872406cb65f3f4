"""stnkit plugin: a TensorBoard observer for live runs and an exporter for stored ones."""

from __future__ import annotations

from stnkit_tensorboard.observer import TensorBoardObserver

__all__ = ["TensorBoardObserver"]
