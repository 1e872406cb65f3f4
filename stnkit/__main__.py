"""``python -m stnkit`` and the ``stnkit`` command.

Signals are taken over before the command line's modules load (torch takes seconds): Ctrl-C or
SIGTERM then ends the process with one line and exit 130, never a traceback or a silent 143.
Only a signal in the interpreter's own start-up, before this module runs, gets Python's defaults
(nothing has been written by then).
"""

from __future__ import annotations

import sys

from stnkit.interrupts import Deferral, install

__all__ = ["main"]


def main() -> int:
    """Run the command line with signals handled from the start."""
    restore = install()
    try:
        # An exception raised inside a C extension's initialisation (torch, h5py) can abort the
        # interpreter; a signal during these imports is held and acted on once they are done.
        with Deferral():
            from stnkit.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
