"""The one place that picks an engine.

An engine is a module (or an object) with the same small interface:
    name        "pure", "compiled", "replay" or "torch"
    Value       the scalar autograd node (``_pure.Value`` is its specification)
    graph()     a context manager scoping one graph; the compiled engine
                releases the nodes created inside it on exit
    Adam        Adam(params, beta1, beta2, eps).step(lr_t, step), zeroing grads

The replay engine is the compiled one plus a recorded training step replayed
in C; it also exports DocumentLoss, which the trainer uses in place of the
model code (replay.py).

The torch engine (torch_engine.py, the optional extra ``[torch]``) is an
object holding its device and dtype; it brings its own Sampler, and trains
batches of documents (run.py gives it torch_train.TorchTrainer). It is not exact, so
``available_engines()`` (the exact ones, tested with ==) leaves it out and
"auto" never picks it.

Choice: an explicit name > $MICROGPT_ENGINE > "auto" (replay when the
extension is built, else pure).
"""
import os

from .errors import EngineError

CHOICES = ("auto", "pure", "compiled", "replay", "torch")
TORCH_INSTALL = ("pip install \".[torch]\" in the source folder, or pip install 'microgpt-arena[torch]' "
                 "(PyTorch and safetensors)")  # the README's form first
ENV_VAR = "MICROGPT_ENGINE"


def _import_compiled():
    try:
        from . import _engine
    except ImportError:
        return None
    return _engine


def compiled_available():
    return _import_compiled() is not None


def requested(name=None):
    """The engine name asked for: name, else $MICROGPT_ENGINE, else "auto"."""
    if name is None:
        name = os.environ.get(ENV_VAR) or "auto"
    return name.strip().lower()


def get_engine(name=None, **torch_options):
    """The engine module for name ("auto", "pure", "compiled", "replay"), or the torch
    engine made with torch_options (device, dtype, threads); None reads $MICROGPT_ENGINE."""
    name = requested(name)
    if name not in CHOICES:
        raise EngineError(f"unknown engine {name!r}: choose one of {', '.join(CHOICES)}")
    if name == "torch":
        return import_torch_engine().TorchEngine(**torch_options)
    if name == "pure":
        from . import _pure
        return _pure
    compiled = _import_compiled()
    if compiled is not None:
        if name == "compiled":
            return compiled
        from . import replay
        return replay
    if name in ("compiled", "replay"):
        raise EngineError(f"the {name} engine needs the compiled extension, which is not built in this installation "
                          "(reinstall with a C compiler present, or use --engine pure)")
    from . import _pure
    return _pure


def available_engines():
    """Names of the engines that can run here, pure first."""
    return ["pure"] + (["compiled", "replay"] if compiled_available() else [])


def import_torch_engine(what="the torch engine"):
    """The torch_engine module; EngineError (one line: how to install) without PyTorch."""
    try:
        from . import torch_engine
    except ImportError as e:
        raise EngineError(f"{what} needs PyTorch, which is not installed here ({e.name or e}): "
                          f"{TORCH_INSTALL}") from None
    return torch_engine


def torch_available():
    try:
        import_torch_engine()
    except EngineError:
        return False
    return True
