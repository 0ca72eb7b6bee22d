"""`microgpt export`: a run's weights as a safetensors file of named tensors.

The names and shapes are the state dict's (``wte``, ``wpe``, ``lm_head``,
``layer{i}.attn_wq`` ...), so ``torch_model.GPT(config).load_state_dict(...)``
takes them as they are; the config goes into the file's metadata as JSON
(``torch_model.from_safetensors`` reads it back). The file is written beside
its destination and renamed into place: nothing half-written is left.
"""
import json

from .data import write_atomic
from .errors import UsageError


def export_safetensors(ckpt, path, dtype="float64"):
    """Write ckpt's weights to path as dtype tensors; returns the number of tensors."""
    import torch
    from safetensors.torch import save

    from .torch_engine import DTYPES
    tensors = {name: torch.tensor(rows, dtype=torch.float64).to(DTYPES[dtype]).contiguous()
               for name, rows in ckpt.weights.items()}
    metadata = {"format": "microgpt", "config": json.dumps(ckpt.config.as_dict()),
                "vocab": json.dumps(ckpt.chars, ensure_ascii=False), "step": str(ckpt.step)}
    raw = save(tensors, metadata=metadata)
    try:
        write_atomic(path, raw, make_folder=False)  # (the mode open() would give, as checkpoints)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write it: {e.strerror or e}") from None
    return len(tensors)
