"""The torch engine's --device and --dtype choices, stated once: the command line
offers them without importing torch, and the torch engine maps them to torch's."""

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float64", "float32", "bfloat16")  # torch's own names for them
