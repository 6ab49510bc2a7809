"""Bad inputs, end to end: the table of (case, exit status, what the user read, verdict).

    python benchmarks/bad_inputs.py                          # this checkout
    python benchmarks/bad_inputs.py --root /tmp/old-awt       # another checkout (its awt/ is imported)
    python benchmarks/bad_inputs.py --only fifo-input,bench-epsilon-0 --fresh

Every case runs a real command (``awt classify``, ``awt bench``, ``awt describe``, ``torchrun``, a
short Python program) on real files made for it: see tests/support/bad_input_cases.py for the cases and what
each must do, tests/support/bad_input_runner.py for how they run (forked from one server that imported awt
once, unless a case needs a process of its own, or ``--fresh``) and are judged. Cases that need a
small filesystem mount a tmpfs; where mounting is not permitted they are skipped, with the reason.
tests/e2e/test_bad_inputs.py asserts every verdict. About 2-4 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.bad_input_cases import CASES  # noqa: E402
from support.bad_input_runner import message_of, run_cases  # noqa: E402
from support.bad_input_world import World  # noqa: E402


def _cell(text: str, width: int) -> str:
    text = text.replace("|", "\\|").replace("\x1b", "\\x1b")
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO, help="the checkout to run (its awt/ is imported)")
    p.add_argument("--only", default=None, help="comma-separated case names")
    p.add_argument("--fresh", action="store_true", help="every case in a process of its own")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--width", type=int, default=150, help="longest message shown")
    args = p.parse_args()
    cases = [c for c in CASES if args.only is None or c.name in args.only.split(",")]
    root = Path(tempfile.mkdtemp(prefix="awt-bad-inputs-"))
    world = World(root)
    print(f"# {len(cases)} cases against {args.root.resolve()} "
          f"({'one process each' if args.fresh else 'forked from one server'}); work folder $W = {root}",
          file=sys.stderr)
    started = time.perf_counter()
    rows = []
    try:
        world.build()
        print("| case | exit | s | message | verdict |\n|---|---:|---:|---|---|", flush=True)
        shown = lambda text: text.replace(str(root), "$W")  # noqa: E731  (the work folder, named above)
        rows = run_cases(args.root.resolve(), world, cases, args.fresh, report=lambda c, r, v: print(
            f"| {c.name} | {'-' if r.exit is None else r.exit} | {r.seconds:.1f} "
            f"| {_cell(shown(message_of(r)), args.width)} | {_cell(shown(v), 100)} |", flush=True))
    finally:
        world.unmount_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ok = sum(v == "ok" for _, _, v in rows)
    skipped = sum(v == "skipped" for _, _, v in rows)
    print(f"\n{ok} of {len(rows)} cases ok, {skipped} skipped, {len(rows) - ok - skipped} bad; "
          f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
