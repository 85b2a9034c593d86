"""Distillation scaled out over processes with torchrun and DistributedDataParallel (logit losses:
ce, kd, hinton, dkd; edgekd/distill/ddp_settings.py says what runs).

`distill_distributed(run)` (the parent; `run` is a DistributedRun) checks its inputs, writes one
request JSON and launches

    python -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=N --local-addr=127.0.0.1 \
        -m edgekd.distill.ddp --request REQUEST.json

Each worker (`main`, this module's `__main__`) joins the process group (gloo on CPU, nccl on CUDA),
opens the project's data (edgekd.data.load.open_source), task and augmentations as a build does,
wraps the student in DistributedDataParallel and runs `edgekd.distill.trainer.fit` with
`shard=(rank, world)`: every process streams the same seeded global batches, applies the same
augmentation (one generator per step) to the whole batch and takes rows rank::world of it; DDP
averages the gradients. The frozen teacher's logits come from the on-disk teacher-logit cache (rank 0
streams the train split through the teacher once on a miss; every rank memory-maps it); with
augmentation the teacher runs every step on the augmented rows and the cache is bypassed, as in one
process. Student and teacher outputs go through the task's forward and KD view. Each rank's loss is
weighted by world * rows_here / rows_in_global_batch (rows = samples), so DDP's average is the mean
over the global batch even when a batch does not split evenly (for token tasks, where the loss is a
mean over tokens, that weighting is by samples). Rank 0 writes the student weights (safetensors,
atomically) and `result.json`. Everything stays on the loopback interface.

BatchNorm: torch.nn.SyncBatchNorm runs only on GPU-like devices (on CPU its training forward raises
ValueError in this torch), so on CPU each process normalizes with the statistics of its own rows
("per-process") and the running statistics are averaged over the processes at the end; on CUDA the
student's BatchNorm layers are converted to SyncBatchNorm ("sync"). See docs/ddp.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.distill.ddp_data import (
    build_model,
    metric_on_test,
    train_data,
    worker_teaching,
)
from edgekd.distill.ddp_settings import (
    DistributedRun,
    check_batches,
    check_run,
    make_request,
)
from edgekd.errors import EXIT_INTERNAL, ConfigError, EdgekdError

if TYPE_CHECKING:
    import torch

    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.streaming import TrainData
    from edgekd.distill.teaching import Teaching
    from edgekd.distill.trainer import FitPlan

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
STDOUT_LOG = "torchrun.stdout.log"
STDERR_LOG = "torchrun.stderr.log"
LOG_DIR = "logs"  # torchrun --log-dir: LOG_DIR/<run id>/attempt_0/<rank>/{stdout,stderr}.log
ERROR_FILE = "error.rank{rank}.json"
STDERR_TAIL_LINES = 25
LOOPBACK = "127.0.0.1"
TERMINATE_GRACE_S = 10.0


class WorkersFailed(EdgekdError):
    """torchrun or one of its workers failed. Carries the last lines of their stderr and the logs.

    `exit_code` is the worker's own (e.g. 2 for a bad factory or weights file) when a worker
    reported an edgekd user error, else 70 (internal error)."""

    def __init__(self, message: str, hint: str | None, returncode: int, stderr_tail: list[str], log_dir: Path,
                 exit_code: int = EXIT_INTERNAL) -> None:
        super().__init__(message, hint)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.log_dir = log_dir
        self.exit_code = exit_code


# ------------------------------------------------------------------------------------ parent side


def torchrun_argv(nproc: int, request: Path, log_dir: Path | None = None) -> list[str]:
    """The torchrun command line (an argument list): single node, loopback rendezvous on a free port;
    with `log_dir`, each worker's stderr is also written to LOG_DIR/<run id>/attempt_0/<rank>/stderr.log."""
    logs = [f"--log-dir={log_dir}", "--tee=2"] if log_dir is not None else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
            f"--local-addr={LOOPBACK}", *logs, "-m", "edgekd.distill.ddp", "--request", str(request)]


def _loopback_env() -> dict[str, str]:
    """Pin the collectives' sockets to the loopback interface (gloo and nccl bootstrap)."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")] if hasattr(socket, "if_nameindex") else []
    if not names:
        return {}
    return {"GLOO_SOCKET_IFNAME": names[0], "NCCL_SOCKET_IFNAME": names[0]}


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> list[str]:
    if not path.is_file():
        return []
    text = path.read_text(errors="replace").splitlines()
    return [line for line in text if line.strip()][-lines:]


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop torchrun and its workers (they share the session we started it in)."""
    for sig, wait_s in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, TERMINATE_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _worker_error(workdir: Path, nproc: int) -> dict[str, Any] | None:
    for rank in range(nproc):
        path = workdir / ERROR_FILE.format(rank=rank)
        if path.is_file():
            return {"rank": rank, **json.loads(path.read_text())}
    return None


def distill_distributed(run: DistributedRun) -> dict[str, Any]:
    """Distill the student on `run.nproc` processes (torchrun, DDP) and write its weights, with
    `run.metadata` in their safetensors header (edgekd.graph.provenance.weights_metadata: who made
    them, which generation). The data, task and augmentations are the project's (`run.data`,
    `run.task`); the teacher's logits come from `run.logits_cache` (default `workdir/teacher-logits`),
    or with augmentation from the teacher run every step.

    Returns {"world_size", "backend", "losses" (mean loss per epoch over the global batches),
    "seconds" (wall time of the torchrun run, start-up included), "train_seconds", "batchnorm"
    ("sync", "per-process" or "none"), "teaching" (where the teacher's outputs came from),
    "test_metric" ({"name", "value"}: the task's metric of the student on the test split),
    "test_accuracy_pt" (that value for accuracy tasks, else None), "device", "weights", "log_dir"}.
    Raises ConfigError for bad inputs (before launching) and WorkersFailed when torchrun or a worker fails."""
    settings = check_run(run)
    workdir = Path(run.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in [RESULT_FILE, *(ERROR_FILE.format(rank=r) for r in range(run.nproc))]:
        (workdir / stale).unlink(missing_ok=True)
    shutil.rmtree(workdir / LOG_DIR, ignore_errors=True)
    request = make_request(run, settings)
    return {**_launch(request, run.nproc, run.timeout_s), "weights": request["out_weights"], "log_dir": str(workdir)}


def _launch(request: dict[str, Any], nproc: int, timeout_s: float | None) -> dict[str, Any]:
    """Write the request and run torchrun on it; the workers' result plus "seconds" (wall time)."""
    from edgekd.common.fsutil import atomic_write_text

    workdir = Path(request["workdir"])
    request_path = workdir / REQUEST_FILE
    atomic_write_text(request_path, json.dumps(request, indent=1))
    # one intra-op thread per process unless the caller says otherwise (torchrun's own default for
    # N > 1; for N = 1 it keeps single- and multi-process runs numerically comparable)
    env = {"OMP_NUM_THREADS": "1", **os.environ, **_loopback_env()}
    start = time.perf_counter()
    with open(workdir / STDOUT_LOG, "wb") as out, open(workdir / STDERR_LOG, "wb") as err:
        proc = subprocess.Popen(torchrun_argv(nproc, request_path, workdir / LOG_DIR), stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            raise WorkersFailed(f"distributed distillation: torchrun ran past {timeout_s} s and was stopped",
                                f"logs in {workdir}", -1, _tail(workdir / STDERR_LOG), workdir) from None
        except BaseException:  # Ctrl-C in the parent: take torchrun and the workers down with it
            _terminate(proc)
            raise
    seconds = time.perf_counter() - start
    result_path = workdir / RESULT_FILE
    if returncode != 0 or not result_path.is_file():
        raise_failed(returncode, workdir, nproc)
    return {**json.loads(result_path.read_text()), "seconds": seconds}


def worker_stderr_tails(workdir: Path, lines: int = STDERR_TAIL_LINES) -> dict[int, list[str]]:
    """The last non-empty stderr lines of each worker (torchrun --log-dir/--tee files), by rank."""
    tails = {}
    for path in sorted((workdir / LOG_DIR).glob("*/attempt_*/*/stderr.log")):
        if path.parent.name.isdigit():
            tails[int(path.parent.name)] = _tail(path, lines)
    return tails


def raise_failed(returncode: int, workdir: Path, nproc: int) -> None:
    tails = worker_stderr_tails(workdir)
    tail = [line for rank in sorted(tails) for line in tails[rank]] or _tail(workdir / STDERR_LOG)
    reported = _worker_error(workdir, nproc)
    if reported is not None:
        raise WorkersFailed(f"distributed distillation: rank {reported['rank']}: {reported['message']}", reported.get("hint"),
                            returncode, tail, workdir, int(reported.get("exit_code", EXIT_INTERNAL)))
    last = [f"rank {rank}: {lines[-1]}" for rank, lines in sorted(tails.items()) if lines]
    shown = " | ".join(last) if last else " | ".join(tail[-3:]) or "(no stderr)"
    raise WorkersFailed(f"distributed distillation failed (torchrun exit {returncode}): {shown}",
                        f"the workers' stderr is in {workdir / LOG_DIR}, torchrun's in {workdir / STDERR_LOG}",
                        returncode, tail, workdir)


# ------------------------------------------------------------------------------------ worker side


def sync_batchnorm_works(device: Any) -> bool:
    """Whether torch.nn.SyncBatchNorm trains on this device under the current process group (a probe:
    in torch 2.x it raises ValueError on CPU). Call it on every rank: on CUDA it runs a collective."""
    import torch

    probe = torch.nn.SyncBatchNorm(1).to(device).train()
    try:
        probe(torch.ones(2, 1, 2, 2, device=device))
    except ValueError:
        return False
    return True


def _batchnorms(model: Any) -> list[Any]:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _wrap(student: Any, device: Any) -> tuple[Any, Any, str]:
    """(the student on `device`, it in DistributedDataParallel, how BatchNorm runs: "sync",
    "per-process" or "none")."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    batchnorm = "none"
    if _batchnorms(student):
        batchnorm = "sync" if sync_batchnorm_works(device) else "per-process"
    if batchnorm == "sync":
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    student = student.to(device)
    ddp = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=batchnorm != "per-process")
    return student, ddp, batchnorm


def _distill(request: dict[str, Any], rank: int, world: int, device: Any) -> tuple[dict[str, Any], Any]:
    """Train this rank's share; returns the result (the same on every rank but the test metric,
    which rank 0 measures) and the trained student module."""
    import torch
    import torch.distributed as dist

    from edgekd.config.models import DistillConfig
    from edgekd.distill.streaming import count_samples
    from edgekd.distill.trainer import FitPlan, build_objective

    cfg = request["distill"]
    data = train_data(request)
    check_batches(count_samples(data.source), cfg["batch_size"], world)
    objective = build_objective(DistillConfig.model_validate(cfg)).to(device)
    teaching = worker_teaching(request, data, objective, rank, device)
    torch.manual_seed(cfg["seed"])  # the same initial student everywhere (DDP also broadcasts rank 0's)
    student = build_model(request["student"], data.task, "student.factory", request["request_path"])
    student, ddp, batchnorm = _wrap(student, device)
    plan = FitPlan(cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["seed"], "distill", (rank, world), cfg.get("warmup_ratio", 0.0))
    losses, train_seconds = _train(ddp, data, Training(objective, teaching, plan, device))
    if batchnorm == "per-process":  # each rank tracked its own rows' statistics: average them
        _average_running_statistics(student, world)
    student.eval()
    task = data.task
    metric = metric_on_test(student.cpu(), data.source, task) if rank == 0 else {"name": task.metric.name, "value": None}
    accuracy = metric["value"] if metric["name"] == "accuracy" else None
    return {"world_size": world, "backend": dist.get_backend(), "losses": losses, "train_seconds": train_seconds,
            "batchnorm": batchnorm, "teaching": teaching.note, "device": str(device), "torch": torch.__version__,
            "test_metric": metric, "test_accuracy_pt": accuracy}, student


@dataclass(frozen=True)
class Training:
    """What one rank trains with besides the model and the data: the objective, the teacher's
    outputs, the plan (with this rank's shard) and the device."""

    objective: CombinedLoss
    teaching: Teaching
    plan: FitPlan
    device: torch.device


def _train(ddp: torch.nn.Module, data: TrainData, how: Training) -> tuple[list[float], float]:
    """Run `fit` on this rank's rows; returns the per-epoch mean losses over the global batches (the
    same on every rank) and the training seconds. Student and teacher outputs go through the task's
    forward and KD view, as in one process (edgekd.distill.trainer.distill)."""
    import torch
    import torch.distributed as dist

    from edgekd.data.sources import INDEX
    from edgekd.distill.losses import LossInputs
    from edgekd.distill.teaching import TeacherStep
    from edgekd.distill.trainer import Step, fit

    task, world = data.task, how.plan.shard[1]
    teacher = TeacherStep(how.teaching, how.objective, task, augmented=data.augment is not None)
    records: list[torch.Tensor] = []  # per step: (sum of this rank's per-row losses, rows)

    def loss_fn(batch: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
        view = task.kd_view(task.forward(ddp, batch), batch)
        t_logits, _ = teacher(batch)
        t_view = None if t_logits is None else task.kd_view(t_logits.to(view.device, torch.float32), batch)
        loss = how.objective(LossInputs(view, t_view, task.kd_labels(batch).to(view.device), {}, {}, step.progress))[0]
        here = len(batch[INDEX])
        records.append(torch.stack([loss.detach() * here, torch.tensor(float(here), device=view.device)]))
        # DDP averages gradients over `world`: weight this rank by its share of the global batch
        return loss * (world * here / step.global_rows)

    start = time.perf_counter()
    fit(ddp, data, how.plan, loss_fn)
    seconds = time.perf_counter() - start
    per_step = torch.stack(records).double()
    dist.all_reduce(per_step)  # sum over ranks: the global batch's loss sum and row count per step
    per_epoch = per_step.view(how.plan.epochs, -1, 2).sum(dim=1)
    return (per_epoch[:, 0] / per_epoch[:, 1]).tolist(), seconds


def _average_running_statistics(student: Any, world: int) -> None:
    """BatchNorm's running mean and variance, averaged over the ranks (per-process BatchNorm)."""
    import torch.distributed as dist

    for bn in _batchnorms(student):
        for buf in (bn.running_mean, bn.running_var):
            if buf is not None:
                dist.all_reduce(buf)
                buf.div_(world)


def _write_outputs(request: dict[str, Any], result: dict[str, Any], student: Any) -> None:
    from safetensors.torch import save

    from edgekd.common.fsutil import atomic_write_bytes, atomic_write_text

    weights = save({k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}, metadata=request.get("metadata") or None)
    atomic_write_bytes(Path(request["out_weights"]), weights)
    atomic_write_text(Path(request["workdir"]) / RESULT_FILE, json.dumps(result, indent=1))


def _report_error(request: dict[str, Any], rank: int, exc: EdgekdError) -> int:
    from edgekd.common.fsutil import atomic_write_text

    report = {"message": str(exc), "hint": exc.hint, "exit_code": exc.exit_code}
    atomic_write_text(Path(request["workdir"]) / ERROR_FILE.format(rank=rank), json.dumps(report))
    print(f"edgekd distill rank {rank}: error: {exc.one_line()}", file=sys.stderr, flush=True)
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """One torchrun worker: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT come from torchrun."""
    parser = argparse.ArgumentParser(prog="python -m edgekd.distill.ddp", description="a torchrun worker of edgekd distill")
    parser.add_argument("--request", required=True, type=Path)
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text())
    request["request_path"] = str(args.request)
    sys.path[:0] = [p for p in request.get("sys_path", []) if p not in sys.path]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        if world > torch.cuda.device_count():  # before init: NCCL cannot put two ranks on one GPU
            return _report_error(request, rank, ConfigError(
                f"distill: {world} processes but {torch.cuda.device_count()} CUDA device(s): nccl needs one GPU per process",
                f"use --nproc {torch.cuda.device_count()} or fewer"))
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group(backend="gloo")
    try:
        result, student = _distill(request, rank, world, device)
        if rank == 0:
            _write_outputs(request, result, student)
        dist.barrier()  # nobody leaves before rank 0 has written
    except EdgekdError as exc:  # a user error: report it to the parent, no traceback
        return _report_error(request, rank, exc)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    # torchrun's error propagation: an uncaught exception is recorded for the launcher's summary
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
