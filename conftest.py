"""Shared pytest setup: stnkit's fixtures, and only this repository's plugins."""

from __future__ import annotations

import os

from hypothesis import settings

pytest_plugins = ("stnkit.testing",)

# Tests must not pick up whatever other stnkit plugins happen to be installed.
os.environ["STNKIT_PLUGINS"] = "tabular,lstm,cnn,augment,tensorboard"
os.environ.pop("STNKIT_DISABLE_PLUGINS", None)

settings.register_profile("ci", deadline=None, max_examples=50)
settings.load_profile("ci")
