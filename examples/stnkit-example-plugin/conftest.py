"""pytest set-up for the example plugin's own tests, as any plugin author would write it."""

from __future__ import annotations

import os

# stnkit.testing's fixtures (stnkit_plugins, run_dir); needs stnkit[testing]
pytest_plugins = ("stnkit.testing",)

# load only this plugin besides stnkit's core, whatever else is installed next to it
os.environ["STNKIT_PLUGINS"] = "example"
os.environ.pop("STNKIT_DISABLE_PLUGINS", None)
