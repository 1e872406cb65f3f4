"""Errors that stnkit reports to users as one clear message.

Every error a user can cause derives from :class:`StnkitError`; the CLI's single error boundary
prints its message (and nothing else) and exits with its ``exit_code``. Anything that is *not* a
``StnkitError`` is a bug in stnkit or a plugin and is shown with its traceback.

::

    StnkitError                     exit 1 unless stated
    ├── UsageError                  exit 2: bad input from the user
    │   ├── RecipeError             one or more ``location: message`` problems in a recipe
    │   ├── DataError               a data file is missing or malformed
    │   ├── ConvertError            a torch module cannot be converted to best-response form as asked
    │   └── RunFileError            a run file is missing, not a stnkit run, damaged, or locked
    ├── RunFileWriteError           the run file could not be written (disk full, removed)
    ├── PluginError                 a plugin failed to import, register or validate
    ├── RegistryError               duplicate or unknown component name
    └── TrainingError
        ├── DivergenceError         a loss or hyperparameter became NaN or infinite
        └── DistributedError        under torchrun: another rank failed, or the ranks disagree
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "ConvertError",
    "DataError",
    "DistributedError",
    "DivergenceError",
    "PluginError",
    "Problem",
    "RecipeError",
    "RegistryError",
    "RunFileError",
    "RunFileWriteError",
    "StnkitError",
    "TrainingError",
    "UsageError",
]


class StnkitError(Exception):
    """Base of every error stnkit reports as a message rather than a traceback."""

    exit_code: int = 1


class UsageError(StnkitError):
    """The user's input (recipe, file, option) is wrong; nothing was started."""

    exit_code = 2


Problem = tuple[str, str]
"""A recipe problem: ``(dotted.location, message)``."""


class RecipeError(UsageError):
    """A recipe failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{loc}: {msg}" if loc else msg for loc, msg in self.problems]
        return "\n".join(lines)

    @classmethod
    def single(cls, location: str, message: str) -> RecipeError:
        return cls([(location, message)])

    @classmethod
    def merge(cls, errors: Iterable[RecipeError]) -> RecipeError:
        problems: list[Problem] = []
        for error in errors:
            problems.extend(error.problems)
        return cls(problems)


class DataError(UsageError):
    """A data set cannot be read: missing file, wrong format, inconsistent arrays."""


class ConvertError(UsageError):
    """A torch module cannot be converted as asked: nothing to convert, a layer type conversion
    cannot handle, a hyperparameter or a pattern that matches nothing, a dropout it cannot see.

    ``location``: where in a conversion spec the problem lies, dotted (``dropout.attn_dropout``,
    ``targets``), or ``hyperparameters.<name>`` for a hyperparameter; ``None`` when it is the
    module itself. The recipe side turns it into a recipe location.
    """

    def __init__(self, message: str, location: str | None = None) -> None:
        self.location = location
        super().__init__(message)


class RunFileError(UsageError):
    """A run file cannot be used: missing, not written by stnkit, or held by another writer."""


class RunFileWriteError(StnkitError):
    """Writing a run file failed (the disk is full, the file or its folder was removed): the run
    stopped; its last checkpoint is intact."""


class PluginError(StnkitError):
    """A plugin could not be loaded, registered or validated; the message names the plugin."""


class RegistryError(StnkitError):
    """A component name is registered twice or is unknown."""

    exit_code = 2


class TrainingError(StnkitError):
    """Training could not continue."""


class DivergenceError(TrainingError):
    """A loss or hyperparameter became NaN or infinite."""

    def __init__(self, message: str, step: int) -> None:
        self.step = step
        super().__init__(message)


class DistributedError(TrainingError):
    """Under torchrun: another rank failed or vanished, a collective timed out, or the ranks'
    hyperparameters or weights drifted apart. ``lost``: a rank is gone (the run can resume)."""

    def __init__(self, message: str, lost: bool = False) -> None:
        self.lost = lost
        super().__init__(message)
