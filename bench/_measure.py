"""Run one command and report its wall time and peak memory as JSON on the last line.

Usage: ``python bench/_measure.py -- CMD ARGS...``.  Peak memory is the larger of

- the largest resident set of any single process the command started
  (``RUSAGE_CHILDREN``: exact, but blind to processes that run side by side), and
- the largest *sum* of the resident sets of the whole process tree (the command and
  all its descendants: worker pools, ``siril-cli``'s helpers), sampled every 100 ms,

so a tool that spreads its work over worker processes is charged for all of them.
Each measured tool runs in its own fresh interpreter and nothing else shares the figure.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time

import psutil


def _tree_rss(root: psutil.Process) -> int:
    """Resident bytes of *root* and all its descendants (vanished processes count 0)."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main(argv: list[str]) -> int:
    if "--" not in argv:
        msg = "usage: _measure.py -- CMD ARGS..."
        raise SystemExit(msg)
    cmd = argv[argv.index("--") + 1 :]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        # Every 100 ms: the pipelines' memory peaks last seconds, and sampling every
        # 20 ms took ~10 % of a core away from the tool being measured.
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_rss(root))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    single_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mib = max(single_kib / 1024, peak[0] / 2**20)
    print(json.dumps({"returncode": returncode, "wall_s": wall, "peak_mib": peak_mib,
                      "peak_single_mib": single_kib / 1024}))  # fmt: skip
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
