"""Training in several processes: torch's launcher, and a process's place among them.

``microgpt train --engine torch --nproc-per-node N`` starts N copies of itself
through torch.distributed.run (what the ``torchrun`` command runs), on this
machine; ``torchrun ... -m microgpt train ...`` does the same across machines.
Each copy finds its rank in the environment the launcher sets (RANK,
WORLD_SIZE, LOCAL_RANK), joins the process group (gloo on the CPU, NCCL on
CUDA) and trains its share of every batch (torch_engine.TorchTrainer); rank 0
alone prints, logs and saves.
"""
import logging
import os
import signal

from .errors import UsageError


def world_size_from_env():
    """The number of processes the launcher started (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def without_flag(argv, flag):
    """argv without `flag VALUE` and `flag=VALUE`, the flag spelled in full or
    abbreviated as argparse takes it (`--nproc 2`: argparse has already refused
    an abbreviation that names two flags)."""
    out, skip = [], False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif name.startswith("--") and len(name) > 2 and flag.startswith(name):
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def launch(nproc, argv, saves=False):
    """Run `python -m microgpt ARGV` in nproc processes on this machine (torch's
    launcher, standalone: a rendezvous on a free local port); returns rank 0's exit status.
    saves: the run saves when a stop signal comes (-o), and then ends with 130, whichever
    the signal, as in one process."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    # the launcher's own notes (the processes it starts and signals, and that one of them
    # failed) are not the user's business: rank 0 says what happened, in one line
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    launcher = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "microgpt"])
    # set after parsing: the launcher's parser would claim abbreviations of its own
    # flags among ours (--log for its --log-dir)
    launcher.training_script_args = list(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (else the launcher sets it, with a warning)
    try:
        run(launcher)
    except ChildFailedError as e:
        failures = sorted(e.failures.items())
        rank, failure = failures[0]
        return failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
    except SignalException as e:
        # Ctrl-C or SIGTERM: the launcher passed it on and waited; rank 0 said what it saved
        return 130 if e.sigval == signal.SIGINT or saves else 128 + int(e.sigval)
    return 0


def setup(engine):
    """Join the process group the launcher prepared; sets engine.rank, engine.world_size
    (and, on CUDA, the process's own GPU)."""
    import torch
    import torch.distributed as dist
    if engine.device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        engine.device = torch.device("cuda", local_rank)
        torch.cuda.set_device(engine.device)
        backend = "nccl"
    elif engine.device.type == "cpu":
        backend = "gloo"
    else:
        raise UsageError(f"training in several processes runs on CUDA or the CPU, not on {engine.device.type}")
    dist.init_process_group(backend=backend)
    engine.rank, engine.world_size = dist.get_rank(), dist.get_world_size()


def teardown():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
