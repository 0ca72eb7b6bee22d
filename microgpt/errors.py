"""The exceptions of microgpt, in pure Python: both engines and the library raise these.

Every message is one line that says what happened, in the library's words
(settings by name, paths as given). A front end words them for its users: the
command line puts its flags where a SettingError names a setting, and adds what
to do next where an error calls for it.
"""
import re

SHOWN_CHARS = 24  # a value longer than this is described in an error line, not repeated


def shown(text, quote=False):
    """A value (a flag's text, a number read from a file) as an error line gives it:
    as it is if short (quote: as repr), else its size."""
    text = str(text)
    if len(text) <= SHOWN_CHARS:
        return repr(text) if quote else text
    digits = text.strip().lstrip("+-").replace("_", "")
    if digits.isdigit():
        return f"a number of {len(digits)} digits"
    return f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


class StaleValueError(RuntimeError):
    """A Value whose graph was released (its node no longer exists)."""


class ArenaMismatchError(ValueError):
    """An operation combined Values that live in two different arenas."""


class EngineError(Exception):
    """An engine that was asked for cannot be had."""


class DataError(Exception):
    """Input that cannot be used: a file, a log, the names data set."""


class NamesDataError(DataError):
    """The names data set is neither in the cache nor to be had from its URL."""


class CheckpointError(DataError):
    """A checkpoint or run directory that cannot be used."""


class RunDirectoryInUse(CheckpointError):
    """A fresh run was pointed at a directory that holds another run's checkpoint."""

    def __init__(self, message, directory):
        super().__init__(message)
        self.directory = directory


class UsageError(Exception):
    """Settings that do not go together, or a request that cannot be served."""


class SettingError(UsageError):
    """A run setting that cannot be used. The message names settings as ``{name}``:
    ``str()`` shows the bare names, ``worded(spell)`` spells each with spell(name)."""

    _NAME = re.compile(r"\{(\w+)\}")

    def __init__(self, template):
        self.template = template
        super().__init__(self.worded(lambda name: name))

    def worded(self, spell):
        return self._NAME.sub(lambda m: spell(m.group(1)), self.template)


class BenchError(Exception):
    """A benchmark worker failed or its runs disagreed with each other."""
