"""Start-up time of the command line against a bare interpreter, measured in one run.

    python benchmarks/startup.py [--repeat 7]

Each command runs ``repeat`` times in a fresh process; the median wall time is printed, and its
excess over ``python -c pass`` (the interpreter's own start). Target: ``awt --help`` < 0.5 s more.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "awt --help": [sys.executable, "-m", "awt", "--help"],
    "awt describe --help": [sys.executable, "-m", "awt", "describe", "--help"],
    "awt classify --help": [sys.executable, "-m", "awt", "classify", "--help"],
    "import awt.classifier (torch)": [sys.executable, "-c", "import awt.classifier"],
}


def median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    base = median_seconds(COMMANDS["python -c pass"], args.repeat)
    for name, cmd in COMMANDS.items():
        t = median_seconds(cmd, args.repeat)
        print(f"{name:32s} {t:6.3f} s   (+{t - base:6.3f} s over a bare interpreter)", flush=True)


if __name__ == "__main__":
    main()
