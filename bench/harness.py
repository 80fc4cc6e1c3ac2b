"""What every benchmark here shares: logging, per-process resource figures, child processes, and a
``main`` that stops the servers on Ctrl-C or SIGTERM and then saves and reports the summary."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_peak_mb(pid: int) -> float | None:
    """Another process's peak RSS (VmHWM), for information (servers: moto, the emulators)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server process and its children (a postmaster: its backends): its own, that of
    the children it has reaped already (backends of closed connections) and that of its live children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(child[1]) == pid:
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def short(rows: int) -> str:
    """A size as a label: 200k, 2M."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def code_version() -> dict[str, str]:
    """Which code was measured: git HEAD and a digest of every ``dagforge/**.py`` (uncommitted work too)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    files = sorted(p for p in (ROOT / "dagforge").rglob("*.py"))
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    return {"git_head": head.stdout.strip() or "unknown", "dagforge_sha1": digest}


def print_profile(path: str, limit: int = 25, what: str = "one project run") -> None:
    """The top entries of a cProfile stats file, by own time, as ``info`` lines."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    print(f"info cProfile (main thread) of {what}, by own time: {path}")
    for line in out.getvalue().splitlines():
        if line.strip():
            print(f"info   {line}")


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def save_summary(stem: str, summary: dict) -> None:
    """``bench/results/<stem>_<time>.json`` (git-ignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2))
    log(f"results written to {path}")


def in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process, so its peak RSS is its own; killed on Ctrl-C/SIGTERM."""
    with get_context("spawn").Pool(1) as pool:  # leaving the block terminates the worker
        return pool.apply(fn, args)


def _send_result(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        result: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:  # handed to the parent
        import traceback

        result = (False, RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    conn.send(result)
    conn.close()


def in_own_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Like :func:`in_child`, in a spawned process that is not a pool's daemon worker, so that it may
    start processes of its own; terminated on Ctrl-C/SIGTERM, an error in it is raised here."""
    ctx = get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_send_result, args=(send, fn, args))
    process.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{fn.__name__}: the child exited with code {process.exitcode} and no result") from None
    except BaseException:  # Ctrl-C, SIGTERM
        process.terminate()
        raise
    finally:
        process.join()
        receive.close()
    if not ok:
        raise value
    return value


def bench_parser(
    doc: str | None,
    *,
    rows: int,
    reps: int,
    rows_help: str = "rows in the source table",
    keep_help: str = "put the servers here and keep it (logs) afterwards",
) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--rows``, ``--reps`` (at least 3) and ``--keep-dir``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=rows, help=f"{rows_help} (default {rows:,})")
    parser.add_argument(
        "--reps", type=int, default=reps, help=f"runs of each path, alternating (default {reps}, min 3)"
    )
    parser.add_argument("--keep-dir", type=Path, help=keep_help)
    return parser


def parse_checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.reps < 3:
        parser.error("--reps must be at least 3")
    return args


def print_last_line(name: str, s: dict, baseline: str = "copy_s") -> None:
    """``<name> rows=N project_s=… <baseline>=… ratio=… peak_rss_mb=…``, the line the README promises."""
    print(
        f"{name} rows={s['rows']} project_s={s['project_s']:.3f} {baseline}={s[baseline]:.3f} "
        f"ratio={s['ratio']:.3f} peak_rss_mb={s['peak_rss_mb']:.1f}",
        flush=True,
    )


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwind the with-blocks, which stop the servers


def bench_main(
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace, Path], dict],
    save: Callable[[dict], None],
    report: Callable[[dict], None],
) -> int:
    """Parse, run in ``--keep-dir`` or a temporary folder, then save and report; 130 when interrupted."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with ExitStack() as stack:
            if args.keep_dir:
                args.keep_dir.mkdir(parents=True, exist_ok=True)
                base = args.keep_dir.resolve()
            else:
                base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dagforge-bench-")))
            summary = run(args, base)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    save(summary)
    report(summary)
    return 0
