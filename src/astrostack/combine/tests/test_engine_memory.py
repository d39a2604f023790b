"""Peak memory of the streamed combine does not grow with the number of frames.

Each run happens in a fresh child process whose peak resident set size
(``ru_maxrss``) is compared: 20 and 80 frames of 1024x1024 float32 ``.npy`` under a
64 MB budget must peak within 15 % of each other (a fully in-memory stack of 80
frames would need 320 MB more than one of 20).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

SIZE = 1024
BUDGET = "64MB"

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    from astrostack.combine.engine import combine_sources, plan_bands
    from astrostack.combine.sources import NpySource

    folder, n, budget = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sources = [NpySource(folder / f"f{i:03d}.npy") for i in range(n)]
    res = combine_sources(sources, method="sigma", memory_limit=budget)
    bands = plan_bands(n, sources[0].shape, budget)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "peak_mb": peak_kb / 1024,
        "bands": len(bands),
        "mean": float(np.nanmean(res.image)),
        "kept": int(res.count.min()),
    }))
    """
)


def _run(folder, n):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(n), BUDGET],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_rss_independent_of_frame_count(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.normal(1000, 10, (SIZE, SIZE)).astype(np.float32)
    for i in range(80):
        # cheap distinct frames: a shifted copy of one noise field plus a level
        np.save(tmp_path / f"f{i:03d}.npy", np.roll(frame, 7 * i, axis=1) + np.float32(i % 3))
    small = _run(tmp_path, 20)
    large = _run(tmp_path, 80)
    assert large["bands"] > small["bands"] >= 2  # the budget really constrains both
    assert abs(small["mean"] - 1000.9) < 0.2 and abs(large["mean"] - 1001.0) < 0.2
    assert small["kept"] >= 16 and large["kept"] >= 64
    ratio = large["peak_mb"] / small["peak_mb"]
    assert ratio < 1.15, (small, large)
    print(f"peak RSS: N=20 {small['peak_mb']:.0f} MB, N=80 {large['peak_mb']:.0f} MB")
