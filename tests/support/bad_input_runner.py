"""Runs the cases of tests/support/bad_input_cases.py and judges them.

By default the commands run in processes forked from one server that has imported awt (from the
checkout under test), torch and open_clip once: about 0.2-3 s a case instead of 3-8 s. Cases whose
outcome depends on the start of a process (Hugging Face environment variables, signals, torchrun,
a program of their own) always start their own process, as every case does with ``fresh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

if __name__ == "__main__":   # run as a script (the case server): tests/ holds the support package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.bad_input_cases import Case, Command, Result  # noqa: E402
from support.bad_input_world import World  # noqa: E402

SUMMARY_LINE = re.compile(r"^\d+ of \d+ input\(s\) could not be (read|classified)")

# -- running -------------------------------------------------------------------------------------------

def _env(root: Path, world: World, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    env.update({"PYTHONPATH": str(root), "AWT_CACHE_DIR": str(world.path("awt-cache")), "OMP_NUM_THREADS": "1",
                "COLUMNS": "120", "TERM": "dumb", **world.hub_env})
    env.update(extra)
    return env


def _read_lines_then_close(stream, count: int) -> list[bytes]:
    lines = []
    while len(lines) < count:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
    stream.close()
    return lines


def run_fresh(root: Path, world: World, cmd: Command) -> Result:
    """The command in a process of its own (its own process group, so that Ctrl-C reaches all of it)."""
    program = cmd.program or [sys.executable, "-m", "awt"]
    out = open(cmd.stdout, "wb") if cmd.stdout else subprocess.PIPE
    started = time.perf_counter()
    p = subprocess.Popen(program + cmd.argv, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=_env(root, world, cmd.env), cwd=world.root, start_new_session=True)
    stdout_lines: list[bytes] = []
    try:
        if cmd.interrupt_after is not None:
            while len(stdout_lines) < cmd.interrupt_after:
                line = p.stdout.readline()
                if not line:
                    break
                stdout_lines.append(line)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGINT)
        if cmd.close_stdout_after is not None:   # as `| head -n N` does
            stdout_lines = _read_lines_then_close(p.stdout, cmd.close_stdout_after)
            p.stdout = None
        rest, err = p.communicate(timeout=cmd.timeout)
        code: int | None = p.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        rest, err = p.communicate()
        code = None
    finally:
        if cmd.stdout:
            out.close()
    stdout = b"".join(stdout_lines) + (rest or b"")
    return Result(code, stdout.decode("utf-8", "backslashreplace"), err.decode("utf-8", "backslashreplace"),
                  time.perf_counter() - started)


class Server:
    """A process that has imported awt (from ``root``), torch and open_clip once, and forks a child
    per command: the child runs ``awt``'s ``main()`` as ``python -m awt`` would."""

    def __init__(self, root: Path, world: World):
        self.world = world
        env = _env(root, world, {})
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=env, cwd=world.root, text=True, bufsize=1)
        assert self.p.stdout.readline().strip() == "ready"

    def run(self, cmd: Command) -> Result:
        tmp = Path(tempfile.mkdtemp(dir=self.world.root, prefix="case-"))
        spec = {"argv": cmd.argv, "env": cmd.env, "stdout": cmd.stdout or str(tmp / "stdout"),
                "stderr": str(tmp / "stderr"), "timeout": cmd.timeout}
        if cmd.close_stdout_after is not None:   # a pipe read N lines deep, then closed: `| head -n N`
            os.mkfifo(tmp / "pipe")
            spec["stdout"] = str(tmp / "pipe")
        self.p.stdin.write(json.dumps(spec) + "\n")
        self.p.stdin.flush()
        head = b""
        if cmd.close_stdout_after is not None:
            with open(tmp / "pipe", "rb") as pipe:
                head = b"".join(_read_lines_then_close(pipe, cmd.close_stdout_after))
        reply = json.loads(self.p.stdout.readline())
        read = lambda p: Path(p).read_bytes().decode("utf-8", "backslashreplace") if Path(p).is_file() else ""  # noqa: E731
        stdout = head.decode("utf-8", "backslashreplace") if cmd.close_stdout_after is not None else (
            "" if cmd.stdout else read(spec["stdout"]))
        return Result(reply["exit"], stdout, read(spec["stderr"]), reply["seconds"])

    def close(self) -> None:
        # an explicit word, not end of file: a process forked by the caller meanwhile (a loader
        # worker) holds a copy of the pipe, so the server would never see its end
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(timeout=30)
        self.p.stdin.close()


def serve() -> None:
    """The server's loop (``--serve``): one JSON command per stdin line, one JSON result per stdout line."""
    import atexit
    import traceback

    import importlib

    # the slow imports, once: what the commands import when they run (a checkout without one of
    # these modules, or without an optional library, simply imports less)
    for name in ("torch", "open_clip", "awt.cli", "awt.classifier", "awt.backbones.openclip", "awt.backbones.hf",
                 "awt.bench.runner", "awt.bench.report", "awt.describe.run", "matplotlib.pyplot", "transformers",
                 "safetensors.torch", "tqdm.auto", "yaml"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        import matplotlib

        matplotlib.use("Agg")
    with contextlib.suppress(Exception):
        from PIL import Image

        Image.init()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        spec = json.loads(line)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            code = 1
            try:
                os.environ.update(spec["env"])
                fd_in = os.open(os.devnull, os.O_RDONLY)
                os.dup2(fd_in, 0)
                out = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | (0 if spec["stdout"].endswith("pipe") else os.O_TRUNC))
                err = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(out, 1)
                os.dup2(err, 2)
                sys.argv = ["awt", *spec["argv"]]
                try:
                    from awt.cli import main

                    main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                with contextlib.suppress(BaseException):
                    atexit._run_exitfuncs()
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(BaseException):
                        stream.flush()
            finally:
                os._exit(code)
        deadline = started + spec["timeout"]
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                break
            if time.perf_counter() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)   # any loader worker left behind
        print(json.dumps({"exit": status, "seconds": time.perf_counter() - started}), flush=True)


# -- judging -------------------------------------------------------------------------------------------

def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"^(rank \d+: )?error: ", line)]


def _tracebacks(r: Result, launcher: bool = False) -> int:
    """Tracebacks in the output; with ``launcher``, less torchrun's own report of a rank that exited
    with a status other than 0 (its ChildFailedError, which awt cannot change)."""
    blocks = (r.stderr + r.stdout).split("Traceback (most recent call last)")[1:]
    if launcher:
        blocks = [b for b in blocks if "ChildFailedError" not in b]
    return len(blocks)


def message_of(r: Result) -> str:
    """What the user read: the first error line, a traceback's last line, or what a run printed last."""
    if r.skipped:
        return f"(skipped: {r.skipped})"
    if r.note:
        return f"{r.note}; {message_of(Result(r.exit, r.stdout, r.stderr, r.seconds))}"
    if _tracebacks(r, launcher=True):
        tail = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith(" ")]
        return "TRACEBACK: " + (tail[-1] if tail else "?")
    errors = _error_lines(r.stderr)
    if errors:
        return errors[0]
    if r.exit is None:
        return "(hung: killed)"
    last = [line for line in (r.stdout + "\n" + r.stderr).splitlines() if line.strip()]
    return "(no error) " + (last[-1].strip() if last else "")


def verdict(c: Case, w: World, r: Result) -> str:
    """``ok``, or what is wrong."""
    if r.skipped:
        return "skipped"
    problems = []
    if r.exit is None:
        problems.append(f"hung (killed after {r.seconds:.0f} s)")
    elif r.exit not in ((c.exit,) if isinstance(c.exit, int) else c.exit):
        problems.append(f"exit {r.exit}, expected {c.exit}")
    if _tracebacks(r, c.launcher):
        problems.append("traceback")
    errors = _error_lines(r.stderr)
    if len(errors) != c.errors:
        problems.append(f"{len(errors)} error lines, expected {c.errors}")
    wanted = (c.message,) if isinstance(c.message, str) else (c.message or ())
    if errors and wanted and not all(m.lower() in errors[0].lower() for m in wanted):
        problems.append("message lacks " + " / ".join(repr(m) for m in wanted if m.lower() not in errors[0].lower()))
    for k in c.kept:
        if k not in r.stdout:
            problems.append(f"{k!r} not on stdout")
    for k in c.stderr_has:
        if k.lower() not in r.stderr.lower():
            problems.append(f"{k!r} not on stderr")
    for k in c.stderr_lacks:
        if k.lower() in r.stderr.lower():
            problems.append(f"{k!r} on stderr")
    if "\r" in r.stderr:
        problems.append("\\r written to a log")
    if c.quiet:
        noise = [line for line in r.stderr.splitlines() if line.strip() and not re.match(
            r"^(rank \d+: )?(warning|error): |^interrupted", line) and not SUMMARY_LINE.match(line)]
        if noise:
            problems.append(f"{len(noise)} other stderr lines ({noise[0][:60]!r})")
    if c.within is not None and r.exit is not None and r.seconds > c.within:
        problems.append(f"took {r.seconds:.0f} s (> {c.within:.0f} s)")
    if c.check is not None and not problems:
        found = c.check(w, r)
        if found:
            problems.append(found)
    return "ok" if not problems else "BAD: " + "; ".join(problems)


def needs_own_process(cmd: Command) -> bool:
    """Whether ``cmd`` must start its own process (its program, a signal to its group, environment
    variables that libraries read at import)."""
    return cmd.fresh or cmd.program is not None or cmd.interrupt_after is not None


def run_case(root: Path, world: World, case: Case, server: "Server | None", fresh: bool = False,
             tries: int | None = None) -> tuple[Result, str]:
    """``case`` run ``tries`` times (default: its own ``tries``; a race shows only in some), judged:
    the first try that is not ``ok``, else the last; with several tries the message says how each
    ended (``3 tries: exit 130, 130, 0``)."""
    made = case.make(world)
    if isinstance(made, str):
        return Result(None, "", "", 0.0, skipped=made), "skipped"
    outcomes = []
    for _ in range(tries or case.tries):
        if fresh or needs_own_process(made) or server is None:
            r = run_fresh(root, world, made)
        else:
            r = server.run(made)
        outcomes.append((r, verdict(case, world, r)))
    bad = [o for o in outcomes if o[1] != "ok"]
    result, found = bad[0] if bad else outcomes[-1]
    if len(outcomes) > 1:
        exits = ", ".join("-" if r.exit is None else str(r.exit) for r, _ in outcomes)
        found = found if not bad else f"{found} (in {len(bad)} of {len(outcomes)} tries)"
        result.note = f"{len(outcomes)} tries: exit {exits}"
    return result, found


def run_cases(root: Path, world: World, cases: list[Case], fresh: bool = False,
              report: Callable[[Case, Result, str], None] | None = None) -> list[tuple[Case, Result, str]]:
    server = None
    rows = []
    try:
        for c in cases:
            if server is None and not fresh:
                server = Server(root, world)
            r, found = run_case(root, world, c, server, fresh)
            rows.append((c, r, found))
            if report:
                report(c, r, found)
    finally:
        if server is not None:
            server.close()
    return rows


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
