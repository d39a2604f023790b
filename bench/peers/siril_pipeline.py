"""Siril's standard pre-processing script, run stage by stage with ``siril-cli``.

The script is Siril 1.0's ``Mono_Preprocessing.ssf`` / ``OSC_Preprocessing.ssf``
(convert, stack the masters, preprocess the lights with the master dark and flat and
dark-based cosmetic correction, register, stack with 3/3 rejection and additive +
scale normalisation).  Each stage is its own ``siril-cli`` call so that its time can
be reported.

Usage: ``python siril_pipeline.py SESSION OUTDIR [--colour]``; prints per-stage times
as JSON on the last line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HEADER = "requires 0.99.4\n"

STAGES_MONO = {
    "masters": """
cd biases
convert bias -out=../process
cd ../process
stack bias rej 3 3 -nonorm
cd ../flats
convert flat -out=../process
cd ../process
preprocess flat -bias=bias_stacked
stack pp_flat rej 3 3 -norm=mul
cd ../darks
convert dark -out=../process
cd ../process
stack dark rej 3 3 -nonorm
""",
    "calibrate": """
cd lights
convert light -out=../process
cd ../process
preprocess light -dark=dark_stacked -flat=pp_flat_stacked -cc=dark {cfa}
""",
    "register": """
cd process
register pp_light
""",
    "stack": """
cd process
stack r_pp_light rej 3 3 -norm=addscale -output_norm -out=../result
""",
}


def main(session: Path, out: Path, colour: bool) -> dict:
    if shutil.which("siril-cli") is None:
        msg = "siril-cli is not installed (Debian package 'siril')"
        raise SystemExit(msg)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # Siril's scripts expect biases/ darks/ flats/ lights/ in the working folder.
    for ours, theirs in (
        ("bias", "biases"),
        ("darks", "darks"),
        ("flats", "flats"),
        ("lights", "lights"),
    ):
        # Real folders of per-file links: a linked folder would make Siril's
        # '-out=../process' resolve inside the input session.
        (out / theirs).mkdir()
        for frame in sorted((session / ours).iterdir()):
            (out / theirs / frame.name).symlink_to(frame.resolve())
    times = {}
    cfa = "-cfa -equalize_cfa -debayer" if colour else ""
    for name, body in STAGES_MONO.items():
        script = out / f"{name}.ssf"
        script.write_text(HEADER + body.format(cfa=cfa))
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["siril-cli", "-d", str(out), "-s", str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        times[name] = time.perf_counter() - t0
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            msg = f"siril-cli stage {name} failed (exit {proc.returncode}); see {out / name}.log"
            raise SystemExit(msg)
    result = next(out.glob("result.fit*"))
    shutil.rmtree(out / "process")
    return {"stages": times, "stack": str(result)}


if __name__ == "__main__":
    res = main(Path(sys.argv[1]), Path(sys.argv[2]), "--colour" in sys.argv)
    print(json.dumps(res))
