"""The command line: each cmd_* function checks its flags, calls the library and prints.

The train command's run (processes, the run, its outcomes) is cli_train.py's.

Errors become one line, ``microgpt: error: ...``, exit status 2 (1 for a failed
benchmark); the library's messages are worded here with the flags that set
what they name.
"""
import errno
import json
import os
import random
import sys

from . import bench, cli_train, distributed, rundir
from . import engine as engines
from .args import build_parser, flag
from .data import Tokenizer, same_file
from .errors import BenchError, DataError, NamesDataError, RunDirectoryInUse, SettingError, UsageError
from .limits import MAX_STEPS
from .model import init_state_dict
from .plot import check_out_path
from .run import RunSettings, check_sizes
from .sampling import check_prompt, make_sampler, sample
from .signals import Terminated, ignore_stop_signals, raise_on_termination, signal_name
from .state import restore_weights


def resolve_engine(name, **torch_options):
    try:
        eng = engines.get_engine(name, **torch_options)
    except engines.EngineError as e:
        raise UsageError(str(e)) from None
    if engines.requested(name) == "auto" and eng.name == "pure":
        print("microgpt: note: the compiled engine is not built in this installation; "
              "running the pure engine (same results, much slower)", file=sys.stderr)
    return eng


TORCH_OPTIONS = ("device", "dtype", "threads")


def engine_for(args):
    """The engine --engine names, the torch engine with its options (--device, --dtype,
    --threads); those options with another engine are refused."""
    options = {name: getattr(args, name, None) for name in TORCH_OPTIONS}
    if engines.requested(args.engine) == "torch":
        return resolve_engine(args.engine, **options)
    eng = resolve_engine(args.engine)
    given = [name for name, value in options.items() if value is not None]
    if given or getattr(args, "nproc_per_node", 1) > 1:
        flag_name = given[0] if given else "nproc_per_node"
        raise UsageError(f"{flag(flag_name)} is an option of the torch engine (--engine torch); "
                         f"this run's engine is {eng.name}")
    return eng


def cmd_train(args):
    if args.num_samples < 0:
        raise UsageError(f"--num-samples must be 0 or more, got {args.num_samples}")
    if args.eval_every and not args.val_fraction and not args.resume:
        raise UsageError("--eval-every needs --val-fraction above 0 (documents to evaluate on)")
    out_dir = args.out_dir or args.resume
    if args.save_every and not out_dir:
        raise UsageError("--save-every needs --out-dir DIR (where to save)")
    check_sizes(args)
    if args.steps > MAX_STEPS:
        raise UsageError(f"--steps {args.steps} is above the limit of {MAX_STEPS}")
    eng = engine_for(args)
    if args.nproc_per_node > 1:
        return cli_train.launch_processes(args)
    if distributed.world_size_from_env() > 1:
        return cli_train.train_in_process_group(args, eng)
    return cli_train.train_run(args, eng)


def cmd_sample(args):
    eng = engine_for(args)
    ckpt = rundir.load(args.out_dir)
    config, tokenizer = ckpt.config, Tokenizer(ckpt.chars)
    prompt = args.prompt
    check_prompt(prompt, tokenizer, config.block_size)
    sd = init_state_dict(eng.Value, config)  # the layout; the weights come next
    restore_weights(ckpt, sd)
    if args.seed is not None:
        random.seed(args.seed)
    else:
        random.setstate(ckpt.rng_state)
    sampler = make_sampler(eng, sd, config, args.num_samples)
    for i in range(args.num_samples):
        text = sample(eng, sd, config, tokenizer, args.temperature, top_k=args.top_k, prefix=prompt,
                      sampler=sampler)
        print(f"sample {i + 1:2d}: {text}", flush=True)
    return 0


def bench_engines(text):
    """The engines --engines names (default: every engine built here)."""
    available = engines.available_engines()
    if text is None:
        return available
    if engines.torch_available():
        available = available + ["torch"]  # (never by default: it is not exact)
    names = list(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise UsageError("--engines needs at least one engine name")
    for name in names:
        if name not in engines.CHOICES or name == "auto":
            raise UsageError(f"--engines: unknown engine {name!r}: choose from "
                             f"{', '.join(c for c in engines.CHOICES if c != 'auto')}")
        if name == "torch" and name not in available:
            raise UsageError(f"--engines: the torch engine needs PyTorch: {engines.TORCH_INSTALL}")
        if name not in available:
            raise UsageError(f"--engines: the {name} engine is not built in this installation "
                             f"(available: {', '.join(available)})")
    return names


def cmd_bench(args):
    names = bench_engines(args.engines)
    configs = bench.configurations(args.n_layer, args.n_embd, args.block_size, args.n_head)
    for cfg in configs:  # the vocabulary is not known yet: a lower bound of the parameters
        check_sizes(RunSettings(**cfg), vocab_size=1)

    def announce(name, cfg, rep):
        print(f"bench: {name} at {bench.config_label(cfg)}, run {rep + 1} of {args.repeat} ...",
              file=sys.stderr, flush=True)

    try:
        # a signal ends the worker under way too: subprocess.run kills and waits for its
        # child on any exception (KeyboardInterrupt for Ctrl-C, Terminated for the others)
        with raise_on_termination():
            report = bench.run(configs, names, input_path=args.input, seed=args.seed, steps=args.steps,
                               warmup=args.warmup, repeat=args.repeat,
                               on_run=announce if sys.stderr.isatty() and not args.json else None)
    except BenchError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 1
    except Terminated as stop:
        ignore_stop_signals()  # the process is ending
        print(f"microgpt: {signal_name(stop.signum)}: benchmark stopped, its worker ended",
              file=sys.stderr, flush=True)
        return 128 + stop.signum
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        bench.print_report(report)
    disagree = [c for c in report["configs"] if c["agree"] is False]
    if disagree:
        print(f"microgpt: error: the engines' losses differ at {bench.config_label(disagree[0])}: "
              f"{disagree[0]['first_mismatch']}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args):
    try:
        engines.import_torch_engine("microgpt export")
    except engines.EngineError as e:
        raise UsageError(str(e)) from None
    from .export import export_safetensors
    if "\0" in args.out:
        raise UsageError("--out: a path cannot hold a NUL character")
    ckpt = rundir.load(args.out_dir)
    check_out_path(args.out, args.out_dir, what="safetensors file")
    count = export_safetensors(ckpt, args.out, args.dtype)
    print(f"wrote {args.out}: {count} tensors ({args.dtype}) of {rundir.checkpoint_path(args.out_dir)}, "
          f"step {ckpt.step}")
    return 0


def cmd_plot(args):
    from .plot import plot_log
    if "\0" in args.out:
        raise UsageError("--out: a path cannot hold a NUL character")
    if same_file(args.out, args.log):  # as train's --log: by real path, or by device and inode
        raise UsageError(f"--out {args.out} is the log file {args.log}; choose another image file")
    plot_log(args.log, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_explain(args):
    from .explain import explain
    for flag_name, path in (("--out", args.out), ("--log", args.log), ("--bench", args.bench)):
        if path is not None and "\0" in path:
            raise UsageError(f"{flag_name}: a path cannot hold a NUL character")
    out, seconds = explain(args.out_dir, args.out, log=args.log, prompt=args.prompt,
                           temperature=args.temperature, seed=args.seed, bench=args.bench)
    print(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB in {seconds:.1f} s)")
    return 0


COMMANDS = {"train": cmd_train, "bench": cmd_bench, "sample": cmd_sample, "plot": cmd_plot,
            "explain": cmd_explain, "export": cmd_export}


def worded(error):
    """The one line a user reads: the library's message in the command line's words."""
    if isinstance(error, SettingError):
        return error.worded(flag)
    if isinstance(error, NamesDataError):
        return f"{error}; train on your own text with --input FILE"
    if isinstance(error, RunDirectoryInUse):
        return f"{error}; continue that run with --resume {error.directory}, or choose another --out-dir"
    return str(error)


def main(argv=None):
    """The program: run one command, return its exit status. After a run that a signal
    stopped, the stop signals stay ignored: the process is ending, and a late Ctrl-C must
    not end it in a traceback (an in-process caller that goes on puts them back)."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # started with the descriptor closed (`>&-`)
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # (--nproc-per-node starts it again)
        status = COMMANDS[args.command](args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # an OSError: it must come before the clause below
        # the reader went away (`microgpt train | head`): stop quietly, and keep
        # Python from failing again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT):
            raise
        print(f"microgpt: error: cannot write output: {e.strerror or e}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except (UsageError, DataError) as e:
        print(f"microgpt: error: {worded(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        ignore_stop_signals()  # the process is ending: a second Ctrl-C must not end it in a traceback
        print("microgpt: interrupted", file=sys.stderr)
        return 130
