"""microgpt: the one-file scalar-autograd GPT trainer, with a pure and a compiled engine."""
__version__ = "0.1.0"

from .engine import available_engines, get_engine  # noqa: E402
from .errors import (  # noqa: E402
    ArenaMismatchError, BenchError, CheckpointError, DataError, EngineError, StaleValueError, UsageError)

__all__ = ["get_engine", "available_engines", "__version__", "StaleValueError", "ArenaMismatchError",
           "EngineError", "DataError", "CheckpointError", "UsageError", "BenchError"]
