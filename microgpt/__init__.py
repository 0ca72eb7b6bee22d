"""microgpt: the one-file scalar-autograd GPT trainer, with a pure and a compiled engine."""
from .engine import get_engine, available_engines

__version__ = "0.1.0"
__all__ = ["get_engine", "available_engines", "__version__"]
