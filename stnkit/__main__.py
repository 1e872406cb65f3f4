from __future__ import annotations

import sys

from stnkit.cli import main

sys.exit(main())
