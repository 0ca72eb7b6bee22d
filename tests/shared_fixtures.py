"""The pytest plugin the tests and the benchmarks share (each conftest.py loads it):
the checks that stop a session that could not mean anything, the names data set,
and the engine parametrization."""
import pytest
from support import session_names_txt

from microgpt import available_engines, get_engine

NAMES_TXT = None


def pytest_configure(config):
    global NAMES_TXT
    NAMES_TXT = session_names_txt()


@pytest.fixture(scope="session")
def names_txt():
    """The names data set (found by support.find_names_txt)."""
    return NAMES_TXT


@pytest.fixture(params=available_engines())
def engine(request):
    """Every engine built here: the same test or benchmark runs on pure and on compiled."""
    return get_engine(request.param)
