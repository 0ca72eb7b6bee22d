"""The exceptions: one pure-Python module, importable from microgpt; the library's words
and the command line's."""
import pytest

import microgpt
from microgpt.args import flag
from microgpt.errors import SettingError


@pytest.mark.parametrize("name, base", [
    ("StaleValueError", RuntimeError), ("ArenaMismatchError", ValueError), ("EngineError", Exception),
    ("DataError", Exception), ("CheckpointError", microgpt.DataError), ("UsageError", Exception),
])
def test_importable_from_microgpt(name, base):
    cls = getattr(microgpt, name)
    assert cls.__module__ == "microgpt.errors"
    assert issubclass(cls, base)
    assert name in microgpt.__all__


def test_a_setting_error_names_settings_and_the_cli_spells_them_as_flags():
    e = SettingError("{n_embd} 10 is not divisible by {n_head} 4")
    assert str(e) == "n_embd 10 is not divisible by n_head 4"
    assert e.worded(flag) == "--n-embd 10 is not divisible by --n-head 4"
