"""torchrun entry for the GPU check's two ranks on one GPU: ``torchrun --nproc-per-node=2
benchmarks/gpu_rank.py bench CONFIG ...`` runs ``awt bench CONFIG ...`` in each rank.

awt gives rank i the GPU ``cuda:LOCAL_RANK``, which a one-GPU machine has for rank 0 only; here
every rank takes GPU 0, and the process group is made first, with the backend that
``AWT_GPU_CHECK_BACKEND`` names (awt then keeps it). NCCL refuses two ranks on one GPU in many
versions: a rank whose NCCL group cannot form or reduce one tensor prints ``gpu_rank: nccl
refused: REASON`` and exits with status 3, and the check runs again with gloo.
"""

from __future__ import annotations

import datetime
import os
import sys

REFUSED = 3


def main() -> None:
    backend = os.environ.get("AWT_GPU_CHECK_BACKEND", "gloo")
    os.environ["LOCAL_RANK"] = "0"  # read by awt.distributed: every rank on GPU 0
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(0)
    try:
        if backend == "nccl":
            dist.init_process_group("nccl", device_id=torch.device("cuda", 0),
                                    timeout=datetime.timedelta(seconds=60))
            probe = torch.ones(1, device="cuda")
            dist.all_reduce(probe)
            torch.cuda.synchronize()
            if int(probe.item()) != dist.get_world_size():
                raise RuntimeError(f"all_reduce gave {probe.item()}, not {dist.get_world_size()}")
        else:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=120))
    except Exception as e:  # noqa: BLE001 - any refusal means: try the other backend
        lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        print(f"gpu_rank: {backend} refused: {lines[0][:300]}", file=sys.stderr, flush=True)
        os._exit(REFUSED)  # no clean-up: a broken NCCL communicator can hang in its destructor
    if dist.get_rank() == 0:
        print(f"gpu_rank: {dist.get_world_size()} ranks joined with {backend}"
              + (f" on {torch.cuda.get_device_name(0)}" if on_gpu else " on the CPU"), file=sys.stderr, flush=True)
    from awt.cli import main as awt_main

    sys.argv = ["awt", *sys.argv[1:]]
    awt_main()


if __name__ == "__main__":
    main()
