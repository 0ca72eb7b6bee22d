"""The train command's run, once cli.py has checked its flags and picked the engine:
in one process, in each of a torch process group's, or launching that group; the
run built (or resumed), trained, sampled and saved; every outcome one line.
"""
import os
import stat
import sys
from contextlib import redirect_stderr, redirect_stdout

from . import distributed, rundir
from .data import load_documents, names_path, same_file, same_path
from .errors import DataError, UsageError
from .model import parameters
from .progress import OutputError, Progress
from .run import RunSettings, build_run, resume_settings
from .sampling import make_sampler, sample, typical_positions
from .signals import StopSignals, signal_name
from .train import Diverged, Stopped, count_cut_documents, train


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


def resumed(args):
    """The checkpoint --resume names (None without it), its settings taken into args."""
    if not args.resume:
        return None
    ckpt = rundir.load(args.resume)
    resume_settings(args, ckpt, args.given)  # (the batch size too)
    if args.eval_every and not args.val_fraction:
        raise UsageError("--eval-every needs --val-fraction above 0, and the resumed run holds out nothing")
    return ckpt


def open_run_dir(out_dir, args, ckpt):
    """The run folder out_dir, locked (close() unlocks); it may already hold the checkpoint
    being resumed."""
    resuming_here = ckpt is not None and same_path(out_dir, args.resume)
    return rundir.prepare_run_dir(out_dir, may_hold_checkpoint=resuming_here)


def launch_processes(args):
    """--nproc-per-node N: this command again in N processes (torch's launcher). What every
    process would refuse before training is checked here first: one line, nothing launched."""
    if distributed.world_size_from_env() > 1:
        raise UsageError("--nproc-per-node: this process was itself started by torchrun; give the "
                         "processes to torchrun only")
    ckpt = resumed(args)
    if args.batch_size % args.nproc_per_node:
        raise UsageError(f"--batch-size {args.batch_size} does not divide evenly among --nproc-per-node "
                         f"{args.nproc_per_node} processes")
    out_dir = args.out_dir or args.resume
    check_log_path(args, ckpt, out_dir)
    if args.input:
        load_documents(args.input)
    if out_dir:  # (a directory made for the check is removed again)
        open_run_dir(out_dir, args, ckpt).close()
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
    ckpt = resumed(args)
    check_log_path(args, ckpt, out_dir)
    run = build_run(eng, settings_from(args), resume=ckpt)
    lock = open_run_dir(out_dir, args, ckpt) if out_dir else None
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
        sampler = make_sampler(eng, sd, run.config, args.num_samples,  # one for every sample (replay: one recording)
                               typical_positions(run.trainer.docs, run.config.block_size),
                               trained=getattr(run.trainer, "document_loss", None))  # (replay: training's)
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
