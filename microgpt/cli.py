"""The command line: each cmd_* function checks its flags, calls the library and prints.

(~450 lines: six commands, the torch engine's options and processes, and the
wording of every library error in flag terms.)

Errors become one line, ``microgpt: error: ...``, exit status 2 (1 for a failed
benchmark); the library's messages are worded here with the flags that set
what they name.
"""
import errno
import json
import os
import random
import stat
import sys
from contextlib import redirect_stderr, redirect_stdout

from . import bench, distributed, rundir
from . import engine as engines
from .args import build_parser, flag
from .data import Tokenizer, load_documents, names_path, same_file
from .errors import BenchError, DataError, NamesDataError, RunDirectoryInUse, SettingError, UsageError
from .limits import MAX_STEPS
from .model import init_state_dict, parameters
from .plot import check_out_path
from .progress import OutputError, Progress
from .run import RunSettings, build_run, check_sizes, resume_settings
from .sampling import make_sampler, sample
from .signals import StopSignals, Terminated, ignore_stop_signals, raise_on_termination, signal_name
from .state import restore_weights
from .train import Diverged, Stopped, count_cut_documents, train


def resolve_engine(name):
    try:
        eng = engines.get_engine(name)
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
    eng = resolve_engine(args.engine)
    options = {name: getattr(args, name, None) for name in TORCH_OPTIONS}
    if eng.name == "torch":
        return type(eng)(**options)
    given = [name for name, value in options.items() if value is not None]
    if given or getattr(args, "nproc_per_node", 1) > 1:
        flag_name = given[0] if given else "nproc_per_node"
        raise UsageError(f"{flag(flag_name)} is an option of the torch engine (--engine torch); "
                         f"this run's engine is {eng.name}")
    return eng


def same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def check_log_path(args, ckpt, out_dir):
    """Refuse a --log that would overwrite (or append into) a file the run reads or writes."""
    if not args.log:
        return
    if "\0" in args.log:
        raise UsageError("--log: a path cannot hold a NUL character")
    try:
        mode = os.stat(args.log).st_mode
    except OSError:
        mode = 0  # not there (created), or not to be opened: the open reports it
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        # opening a FIFO for writing waits for a reader, maybe for ever; a socket cannot be opened
        raise UsageError(f"--log {args.log} is a {'FIFO' if stat.S_ISFIFO(mode) else 'socket'}, "
                         f"not a file; give a regular file (or a device such as /dev/null)")
    inputs = []
    if args.input:
        inputs.append(("the --input file", args.input))
    elif ckpt is not None:
        inputs.append(("the resumed run's data file", ckpt.data_path))
    inputs.append(("the cached names data set", names_path()))
    for what, path in inputs:
        if same_file(args.log, path):
            raise UsageError(f"--log {args.log} is {what} ({path}); choose another log file")
    for directory in dict.fromkeys(d for d in (out_dir, args.resume) if d):
        ckpt_file = rundir.checkpoint_path(directory)
        if same_file(args.log, ckpt_file) or same_path(args.log, directory) or \
                os.path.realpath(args.log).startswith(os.path.realpath(ckpt_file) + os.sep):
            raise UsageError(f"--log {args.log} is the run directory's checkpoint ({ckpt_file}); "
                             f"choose another log file")


def settings_from(args):
    return RunSettings(input=args.input, seed=args.seed, n_layer=args.n_layer, n_embd=args.n_embd,
                       block_size=args.block_size, n_head=args.n_head, steps=args.steps,
                       learning_rate=args.learning_rate, val_fraction=args.val_fraction,
                       batch_size=args.batch_size)


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
        return launch_processes(args)
    if distributed.world_size_from_env() > 1:
        return train_in_process_group(args, eng)
    return train_run(args, eng)


def launch_processes(args):
    """--nproc-per-node N: this command again in N processes (torch's launcher). What every
    process would refuse before training is checked here first: one line, nothing launched."""
    if distributed.world_size_from_env() > 1:
        raise UsageError("--nproc-per-node: this process was itself started by torchrun; give the "
                         "processes to torchrun only")
    ckpt = None
    if args.resume:
        ckpt = rundir.load(args.resume)
        resume_settings(args, ckpt, args.given)  # (the batch size too)
    if args.batch_size % args.nproc_per_node:
        raise UsageError(f"--batch-size {args.batch_size} does not divide evenly among --nproc-per-node "
                         f"{args.nproc_per_node} processes")
    out_dir = args.out_dir or args.resume
    check_log_path(args, ckpt, out_dir)
    if args.input:
        load_documents(args.input)
    if out_dir:  # (a directory made for the check is removed again)
        resuming_here = ckpt is not None and same_path(out_dir, args.resume)
        rundir.prepare_run_dir(out_dir, may_hold_checkpoint=resuming_here).close()
    argv = distributed.without_flag(args.argv, "--nproc-per-node")
    return distributed.launch(args.nproc_per_node, argv, saves=out_dir is not None)


def train_in_process_group(args, eng):
    """One of several processes (started by torchrun or --nproc-per-node): rank 0 prints,
    logs, samples and saves; the others train in silence."""
    if eng.name != "torch":
        raise UsageError(f"this process was started by torchrun (WORLD_SIZE {distributed.world_size_from_env()}): "
                         f"training in several processes needs --engine torch")
    distributed.setup(eng)
    try:
        if eng.rank == 0:
            return train_run(args, eng)
        return train_in_silence(args, eng)
    finally:
        distributed.teardown()


def train_in_silence(args, eng):
    """A process other than rank 0: no output, log, samples, checkpoint or error line (rank 0
    meets the same errors, or the group breaking, and says it in one line). A stop signal is
    only noted: rank 0 stops the run and saves it, and this process ends when the group breaks."""
    import torch.distributed as dist
    args.log, args.num_samples = None, 0
    with StopSignals(linger=True) as stop, open(os.devnull, "w", encoding="utf-8") as quiet:
        try:
            with redirect_stdout(quiet), redirect_stderr(quiet):
                return train_run(args, eng, saves=False)
        except (UsageError, DataError):
            return 2
        except (RuntimeError, dist.DistError):
            return 130 if stop.requested is not None else 1


def train_run(args, eng, saves=True):
    out_dir = (args.out_dir or args.resume) if saves else None
    ckpt = None
    if args.resume:
        ckpt = rundir.load(args.resume)
        resume_settings(args, ckpt, args.given)
        if args.eval_every and not args.val_fraction:
            raise UsageError("--eval-every needs --val-fraction above 0, and the resumed run holds out nothing")
    check_log_path(args, ckpt, out_dir)
    run = build_run(eng, settings_from(args), resume=ckpt)
    lock = None
    if out_dir:
        resuming_here = args.resume is not None and same_path(out_dir, args.resume)
        lock = rundir.prepare_run_dir(out_dir, may_hold_checkpoint=resuming_here)
    try:
        return train_and_sample(args, eng, run, ckpt, out_dir)
    finally:
        if lock is not None:
            lock.close()


def train_and_sample(args, eng, run, ckpt, out_dir):
    log = None
    if args.log:
        try:
            log = open(args.log, "a" if ckpt is not None else "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write log file {args.log}: {e.strerror or e}") from None
    progress = None
    try:
        print_run_summary(run, args)
        progress = Progress(args.steps, sys.stdout, log)
        try:
            where = train(run, progress, eval_every=args.eval_every, out_dir=out_dir, save_every=args.save_every,
                          signals=StopSignals(linger=True))
        except Stopped as stop:
            progress.end_line()
            more = f"; {stop.ignored} more signal{'s' * (stop.ignored > 1)} ignored while stopping" if stop.ignored else ""
            print(f"microgpt: {signal_name(stop.signum)} at step {stop.step} of {args.steps}: checkpoint saved "
                  f"to {stop.where} (continue with: microgpt train --resume {out_dir}){more}",
                  file=sys.stderr, flush=True)
            return 130
        except Diverged as e:
            progress.end_line()
            print(f"microgpt: error: {diverged_line(e, args)}", file=sys.stderr, flush=True)
            return 1
        print("\n--- inference (new, hallucinated names) ---")
        samples = []
        sd = run.trainer.sd  # the trained weights (the torch engine brings its Weights up to date here)
        sampler = make_sampler(eng, sd, run.config)  # one for every sample (replay: one recording)
        for i in range(args.num_samples):
            samples.append(sample(eng, sd, run.config, run.tokenizer, args.temperature, sampler=sampler))
            print(f"sample {i + 1:2d}: {samples[-1]}", flush=True)
        progress.record({"samples": samples})
        if where is not None:
            print(f"checkpoint: {where} (step {run.trainer.step} of {args.steps})")
        return 0
    except KeyboardInterrupt:  # Ctrl-C without --out-dir: end a progress line left open, once
        if progress is not None:
            progress.end_line()
        raise
    except OutputError as e:
        progress.end_line = lambda: None
        if e.broken_pipe:
            raise BrokenPipeError from None  # main ends it quietly (the run is saved, with -o)
        where = f"; the checkpoint of step {run.trainer.step} is saved to {e.saved}" if e.saved else ""
        print(f"microgpt: error: {e}{where}", file=sys.stderr, flush=True)
        return 1
    finally:
        if log is not None:
            try:
                log.close()
            except OSError:
                pass  # already reported


def diverged_line(e, args):
    line = f"training diverged at step {e.step} of {args.steps}: {e.what}; lower --learning-rate (now {args.learning_rate})"
    if e.saved is not None:
        return f"{line}; the state after step {e.saved_step}, the last finite one, is saved to {e.saved}"
    out_dir = args.out_dir or args.resume
    if out_dir and os.path.exists(rundir.checkpoint_path(out_dir)):
        return f"{line}; nothing was saved, the last checkpoint {rundir.checkpoint_path(out_dir)} is kept"
    return line + "; nothing was saved"


def print_run_summary(run, args):
    trainer = run.trainer
    print(f"engine: {getattr(run.engine, 'label', run.engine.name)}")
    if getattr(trainer, "batch_size", 1) != 1:
        print(f"batch size: {trainer.batch_size} documents a step")
    print(f"num docs: {len(run.docs)}")
    print(f"vocab size: {run.tokenizer.vocab_size}")
    print(f"num params: {len(parameters(run.sd))}")
    if run.val_docs:
        print(f"held out for validation: {len(run.val_docs)} docs, training on {len(trainer.docs)}")
    cut = count_cut_documents(trainer.docs, run.config.block_size)
    if cut:
        print(f"docs longer than the block: {cut} of {len(trainer.docs)}, "
              f"trained on their first {run.config.block_size + 1} tokens")
    if run.resumed is not None:
        print(f"resuming {rundir.checkpoint_path(args.resume)} at step {run.resumed.step} of {args.steps}")


def cmd_sample(args):
    eng = engine_for(args)
    ckpt = rundir.load(args.out_dir)
    config, tokenizer = ckpt.config, Tokenizer(ckpt.chars)
    prompt = args.prompt
    unknown = list(dict.fromkeys(ch for ch in prompt if ch not in tokenizer.stoi))
    if unknown:
        raise UsageError(f"--prompt has characters outside the model's vocabulary: "
                         f"{', '.join(repr(ch) for ch in unknown)} (vocabulary: {''.join(tokenizer.chars)!r})")
    if len(prompt) > config.block_size - 1:
        raise UsageError(f"--prompt is {len(prompt)} characters; the model's block of {config.block_size} "
                         f"tokens holds at most {config.block_size - 1} after the start token")
    sd = init_state_dict(eng.Value, config)  # the layout; the weights come next
    restore_weights(ckpt, sd)
    if args.seed is not None:
        random.seed(args.seed)
    else:
        random.setstate(ckpt.rng_state)
    sampler = make_sampler(eng, sd, config)
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
