"""Several processes, one result: ``torchrun`` (or ``srun``) ranks that share images and agree.

Without a launcher's environment everything here is a no-op for one process, so the library runs
unchanged. Under ``torchrun --nproc-per-node=K -m awt ...`` each rank takes a disjoint,
deterministic share of the images (every ``world``-th of a list both sides agree on, decided by
rank 0), rank 0 alone writes results, and the ranks meet at barriers. NCCL joins GPU ranks, gloo
CPU ones; each rank's GPU is its ``LOCAL_RANK``. A rank that fails ends the job: torchrun stops the
others, which would otherwise wait at the next barrier.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

_TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("AWT_DIST_TIMEOUT_MIN", "60")))


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th, from position ``rank``."""
        return list(items[self.rank :: self.world])


def ranks_from_env(environ: dict | None = None) -> Ranks:
    """The rank, world size and local rank that torchrun (``RANK``...) or Slurm (``SLURM_PROCID``...) set."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        return Ranks(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        return Ranks(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return Ranks()


_RANKS: Ranks | None = None


def ranks() -> Ranks:
    """This process's place in the job (rank 0 of 1 without a launcher)."""
    return _RANKS or ranks_from_env()


def init(device: str | None = "auto") -> Ranks:
    """Join the process group when a launcher started several ranks; returns this rank's place.

    Returns the device this rank should use in place of ``device``: ``cuda:LOCAL_RANK`` for ``auto``
    or ``cuda`` when ranks run on GPUs.
    """
    global _RANKS
    r = ranks_from_env()
    if r.active and _RANKS is None:
        import torch
        import torch.distributed as dist

        os.environ.setdefault("RANK", str(r.rank))
        os.environ.setdefault("WORLD_SIZE", str(r.world))
        os.environ.setdefault("LOCAL_RANK", str(r.local_rank))
        on_gpu = torch.cuda.is_available() and str(device or "auto").split(":")[0] in ("auto", "cuda")
        if on_gpu:
            torch.cuda.set_device(r.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if on_gpu else "gloo", timeout=_TIMEOUT)
    _RANKS = r
    return r


def rank_device(device: str | None) -> str | None:
    """``device`` for this rank: a bare ``auto``/``cuda`` becomes ``cuda:LOCAL_RANK`` on GPU ranks."""
    r = ranks()
    if not r.active:
        return device
    import torch

    if torch.cuda.is_available() and str(device or "auto") in ("auto", "cuda"):
        return f"cuda:{r.local_rank}"
    return device


def barrier() -> None:
    if ranks().active:
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value``, on every rank (any picklable object)."""
    if not ranks().active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
    r = ranks()
    if not r.active:
        return [value]
    import torch.distributed as dist

    out = [None] * r.world if r.main else None
    dist.gather_object(value, out, dst=0)
    return out


def process_ids() -> list[tuple[str, int]] | None:
    """Every rank's (host name, process id), in rank order, on rank 0 (None on the others)."""
    import socket

    return gather((socket.gethostname(), os.getpid()))


def wait_for_exit(processes: Sequence[tuple[str, int]], timeout: float = 10.0) -> None:
    """Wait (at most ``timeout`` seconds) until the other processes of this host in ``processes``
    have exited: a rank that ends with an error status after its peers have ended with 0 is reported
    by torchrun as the one failure it is, not as a failure that had the others killed (SIGTERM)."""
    import socket
    import time

    me, host = os.getpid(), socket.gethostname()
    waiting = [pid for h, pid in processes if h == host and pid != me]
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if _running(pid)]
        if waiting:
            time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:   # gone, or no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return not os.path.exists("/proc")


def finish() -> None:
    """Leave the process group (at the end of a command)."""
    global _RANKS
    if ranks().active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _RANKS = None
