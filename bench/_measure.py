"""Run one command and report its wall time and peak memory as JSON on the last line.

Usage: ``python bench/_measure.py -- CMD ARGS...``.  Peak memory is the largest
resident set of any process the command started (``RUSAGE_CHILDREN``), so each
measured tool runs in its own fresh interpreter and nothing else shares the figure.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if "--" not in argv:
        msg = "usage: _measure.py -- CMD ARGS..."
        raise SystemExit(msg)
    cmd = argv[argv.index("--") + 1 :]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"returncode": proc.returncode, "wall_s": wall, "peak_mib": peak_kib / 1024}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
