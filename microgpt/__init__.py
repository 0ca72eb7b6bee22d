"""microgpt: the one-file scalar-autograd GPT trainer, with a pure and a compiled engine.

``from microgpt import Value, graph, Adam`` is the drop-in import: the names of
the engine that ``$MICROGPT_ENGINE`` (else "auto": replay when the extension is
built, else pure) picks, bound once, when the package is imported.
"""
__version__ = "0.1.0"

from .engine import available_engines, get_engine  # noqa: E402
from .errors import (  # noqa: E402
    ArenaMismatchError, BenchError, CheckpointError, DataError, EngineError, StaleValueError, UsageError)

_DROP_IN = ("Value", "graph", "Adam")

try:
    _drop_in = get_engine(None)
except EngineError as _error:
    # a bad $MICROGPT_ENGINE must not stop the package (the CLI reports it in one
    # line); it is raised where the drop-in names are asked for
    _engine_error = _error
    del _error

    def __getattr__(name):
        if name in _DROP_IN:
            raise EngineError(f"microgpt.{name}: {_engine_error}")
        raise AttributeError(f"module 'microgpt' has no attribute {name!r}")
else:
    if _drop_in.name == "torch":  # it trains tensors: it has no scalar Value to drop in
        _engine_error = EngineError("the torch engine has no scalar Value; the drop-in names come from "
                                    "pure, compiled or replay")

        def __getattr__(name):
            if name in _DROP_IN:
                raise EngineError(f"microgpt.{name}: {_engine_error}")
            raise AttributeError(f"module 'microgpt' has no attribute {name!r}")
    else:
        Value, graph, Adam = _drop_in.Value, _drop_in.graph, _drop_in.Adam

__all__ = ["Value", "graph", "Adam", "get_engine", "available_engines", "__version__",
           "StaleValueError", "ArenaMismatchError", "EngineError", "DataError", "CheckpointError", "UsageError",
           "BenchError"]
