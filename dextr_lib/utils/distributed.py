"""torch.distributed in one place: which process this is, and the few collectives training needs.

``torchrun`` (``torch.distributed.run``) starts one process per device and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads
them (NCCL on CUDA, one device per ``LOCAL_RANK``; gloo on CPU). Without them everything here
works as a world of one process, so callers never branch on ``rank == 0`` themselves: they ask
:func:`is_main`. A collective that fails because another process died raises
:class:`~dextr_lib.errors.DistributedError` instead of hanging or showing a backend traceback.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

from ..errors import DistributedError

#: How long a collective may wait for the other processes before the job stops.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The world ``torchrun`` describes in the environment (a world of one without it)."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise DistributedError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {e}") from None


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's
    share; ``os.cpu_count()`` where the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_process_count(nproc: int, device: torch.device) -> None:
    """Refuse to start more processes than ``device`` can hold, before any starts.

    One process per CPU core on the CPU (more only swap and exhaust memory: each holds a model,
    its optimiser and a data loader), one per visible GPU on CUDA (NCCL needs a GPU each), and
    a single process on MPS.

    Args:
        nproc: processes asked for (``--nproc``).
        device: the resolved device the processes train on.

    Raises:
        DistributedError: more processes than the device allows, with the count and the reason.
    """
    if device.type == "cuda":
        most, unit = torch.cuda.device_count(), "visible CUDA GPU(s)"
        why = "NCCL training needs one GPU per process (CUDA_VISIBLE_DEVICES says which)"
    elif device.type == "cpu":
        most, unit = usable_cpus(), "CPU core(s) available to this process"
        why = "each process holds its own model, optimiser and data loader"
    else:
        most, unit, why = 1, f"{device.type} device", "it runs a single process"
    if nproc > most:
        raise DistributedError(
            f"--nproc {nproc} asks for more training processes than this machine allows on "
            f"{device.type}: {most} {unit}; {why}. Use --nproc {most} or fewer"
        )


def init_from_env(device: Optional[str] = None) -> World:
    """Join the process group ``torchrun`` set up (no-op in a world of one, or if joined already).

    Args:
        device: the job's device setting; ``cuda``/``auto`` with CUDA available picks NCCL and
            the GPU ``LOCAL_RANK``, anything else gloo.

    Returns:
        This process's :class:`World`.
    """
    world = env_world()
    if not world.distributed or dist.is_initialized():
        return world
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith(("cuda", "auto")))
    if cuda:
        torch.cuda.set_device(world.local_rank)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"cannot join the {world.size}-process group: {_first_line(e)}") from None
    return world


def current() -> World:
    """This process's :class:`World` (a world of one outside a process group)."""
    if not dist.is_available() or not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), env_world().local_rank)


def is_main() -> bool:
    """True in the process that writes files, logs and progress (rank 0, or the only one);
    also before joining and after leaving the process group (as torchrun's ``RANK`` says)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_world().rank == 0


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """The sums of ``values`` over all processes (float64; ``values`` itself in a world of one)."""
    if not current().distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    _collective(dist.all_reduce, t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` in every process (picklable plain data)."""
    if not current().distributed:
        return obj
    box = [obj]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers of ``module`` (batch-norm running statistics: each
    process updates its own in its last forward; the saved model is rank 0's)."""
    if not current().distributed:
        return
    for buf in module.buffers():
        _collective(dist.broadcast, buf, src=0)


def barrier() -> None:
    if current().distributed:
        _collective(dist.barrier)


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def lost_process_error(e: BaseException) -> DistributedError:
    """The error to show when a collective failed (another process died or stopped)."""
    return DistributedError(
        f"another training process stopped or died ({_first_line(e)}); this one stops too. "
        "See the other processes' messages above; the job resumes from its last checkpoint with --resume"
    )


def _collective(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except (RuntimeError, dist.DistBackendError) as e:
        raise lost_process_error(e) from None


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
