"""Named crash points for reliability tests: ``STNKIT_TEST_KILL_AT=<point>[:<count>]``.

With the variable set, the process sends itself SIGKILL the ``count``-th time (default: the
first) it reaches ``point`` — exactly as if the machine had killed it there, with no Python
cleanup, no HDF5 close and no lock release other than the operating system's. Without the
variable every call is one dictionary lookup. The points (see ``docs/store.md``):

``weight-step``       after a weight step and its hyper steps, mid-epoch
``final-eval``        before each test batch of the final evaluation
``checkpoint-bytes``  a checkpoint's bytes and hash are on disk, ``latest`` not yet moved
``checkpoint-done``   a checkpoint is complete
``flush-rows``        a table's rows are on disk, its ``_rows`` count not yet updated
``rebuild``           a rebuilt run file is complete under its temporary name, not yet in place
``rebuilt``           a rebuilt run file has just replaced the old one (resume, growth)
``end-tables``        end of run: every row flushed, results not yet written
``end-results``       end of run: final/best/test values written, attributes not yet
``end-attrs``         end of run: counters and end time written, ``status`` not yet
``end-status``        end of run: ``status`` written, the file not yet closed

``STNKIT_TEST_SIGNAL_AT=<point>:<SIGNAL>`` (``SIGINT`` or ``SIGTERM``) instead sends the process
that signal at a start-up phase, as a user's Ctrl-C or a scheduler's SIGTERM would arrive:

``cli-import``        the command line's modules are loading
``recipe``            the recipe is read, not yet validated
``data``              the recipe is valid, the data set not yet built
``claim``             the run file's name is claimed (its ``.lock`` made), the file not yet
``store``             the run file exists, the run's own signal handler not yet installed
"""

from __future__ import annotations

import os
import signal

__all__ = ["SIGNAL_VARIABLE", "VARIABLE", "kill_point", "signal_point"]

VARIABLE = "STNKIT_TEST_KILL_AT"
SIGNAL_VARIABLE = "STNKIT_TEST_SIGNAL_AT"

_seen: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``STNKIT_TEST_KILL_AT`` names ``name`` and its count is reached."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def signal_point(name: str) -> None:
    """Send this process the signal ``STNKIT_TEST_SIGNAL_AT`` names if it names ``name``."""
    spec = os.environ.get(SIGNAL_VARIABLE)
    if not spec:
        return
    point, _, signame = spec.partition(":")
    if point == name:
        os.kill(os.getpid(), signal.Signals[signame or "SIGINT"])
