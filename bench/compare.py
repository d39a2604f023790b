"""astrostack against its peers, side by side on the same simulated night.

Simulates a session (mono, and colour with ``--colour``), then runs one after another,
each in a fresh process whose wall time and peak memory are measured:

- astrostack end to end (``astrostack run``);
- the ccdproc + astroalign pipeline of their documentation (``peers/ccdproc_pipeline.py``;
  mono only);
- Siril's standard script through ``siril-cli`` (``peers/siril_pipeline.py``), when
  ``siril-cli`` is installed (Debian package ``siril``).

Every result is measured against the simulator's truth (``quality.py``: ``noise_rel``
per pixel, ``noise_bin_rel`` at 16x16 blocks - insensitive to the noise smoothing of
each tool's registration interpolation - ``snr_extended`` of the faint extended
emission on the binned noise, ``snr_extended_px`` on the per-pixel noise,
``background_error`` the large-scale residual; residual PNGs in ``OUT/maps``) and the table,
with astrostack / peer ratios, is printed and written to ``OUT/compare.json`` and
``OUT/compare.md``.  ``--scaling 10,40,160`` adds astrostack's time and memory for
those numbers of lights.

Example::

    python bench/compare.py --size 6000x4000 --lights 50
    python bench/compare.py --size 2000x1500 --lights 30 --colour --scaling 10,40,160
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import match_resolution, measure_against_truth  # noqa: E402

from astrostack.simulate import SessionConfig, simulate_session  # noqa: E402


def _measured(cmd: list[str], log: Path) -> tuple[dict, str]:
    """Run *cmd* under ``_measure.py``; return its measurement and its stdout."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "_measure.py"), "--", *cmd],
        capture_output=True,
        text=True,
        check=False,
    )
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    measure = json.loads(lines[-1]) if lines else {"returncode": proc.returncode}
    return measure, "\n".join(lines[:-1])


def _load(path: str | Path) -> np.ndarray:
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.data is not None and hdu.data.ndim >= 2:
                return np.asarray(hdu.data, dtype=np.float32)
    msg = f"{path}: no image data"
    raise ValueError(msg)


def run_astrostack(session: Path, out: Path) -> dict:
    exe = shutil.which("astrostack", path=str(Path(sys.executable).parent)) or "astrostack"
    measure, _ = _measured(
        [exe, "run", str(session), "-o", str(out), "--quiet", "--force"],
        out.parent / "astrostack.log",
    )
    stages = {}
    info = out / "session.json"
    if info.exists():
        doc = json.loads(info.read_text())
        for stage in doc.get("stages", []):
            stages[stage["name"]] = stage.get("seconds", stage.get("time"))
    stacks = sorted(out.glob("stack*.fits"))
    return {**measure, "stages": stages, "stack": str(stacks[0]) if stacks else None}


def run_peer(script: str, session: Path, out: Path, colour: bool) -> dict:
    cmd = [sys.executable, str(HERE / "peers" / script), str(session), str(out)]
    if colour:
        cmd.append("--colour")
    measure, stdout = _measured(cmd, out.parent / f"{script}.log")
    info = json.loads(stdout.splitlines()[-1]) if stdout else {}
    return {**measure, **info}


def _row(name: str, res: dict, q: dict) -> dict:
    return {
        "tool": name,
        "wall_s": res.get("wall_s"),
        "peak_mib": res.get("peak_mib"),
        "stages": res.get("stages", {}),
        "returncode": res.get("returncode"),
        "stack": res.get("stack"),
        **q,
    }


def _simulated(session: Path, config: SessionConfig, keep: bool) -> None:
    """Simulate *config* into *session*; with *keep*, reuse a finished one of the same config."""
    stamp = session.with_name(session.name + ".done")
    wanted = repr(config)
    if keep and session.exists() and stamp.exists() and stamp.read_text() == wanted:
        print(f"reusing {session}", flush=True)
        return
    stamp.unlink(missing_ok=True)
    if session.exists():
        shutil.rmtree(session)
    simulate_session(session, config)
    stamp.write_text(wanted)


def _equal_resolution(rows: list[dict], session: Path) -> None:
    """Add ``snr_matched``/``fwhm_matched``: SNR with every result blurred to the widest FWHM."""
    fwhms = [r["fwhm"] for r in rows if np.isfinite(r.get("fwhm", np.nan)) and r.get("stack")]
    if len(fwhms) < 2:
        return
    target = max(fwhms) * 1.02  # a little wider than the widest, so every result is blurred
    for r in rows:
        if not r.get("stack") or not np.isfinite(r.get("fwhm", np.nan)):
            continue
        try:
            blurred = match_resolution(_load(r["stack"]), r["fwhm"], target)
            q = measure_against_truth(blurred, str(session))
        except Exception as exc:  # a peer's odd output must not stop the table
            r["snr_matched_error"] = repr(exc)
            continue
        r["snr_matched"] = q.get("snr_extended")
        r["fwhm_matched"] = q.get("fwhm")


def compare(
    size: tuple[int, int],
    lights: int,
    colour: bool,
    out: Path,
    peers: list[str],
    calib: int,
    seed: int,
    keep: bool = False,
) -> list[dict]:
    kind = "colour" if colour else "mono"
    session = out / f"session-{kind}"
    config = SessionConfig(
        shape=size,
        n_lights=lights,
        n_bias=calib,
        n_darks=calib,
        n_flats=calib,
        satellites=2,
        n_stars=max(800, size[0] * size[1] // 4000),
        bayer="RGGB" if colour else None,
        seed=seed,
    )
    print(f"simulating {kind} session {size[1]}x{size[0]}, {lights} lights ...", flush=True)
    _simulated(session, config, keep)
    rows = []
    tools = [("astrostack", lambda o: run_astrostack(session, o))]
    if "ccdproc" in peers and not colour:
        tools.append(
            ("ccdproc+astroalign", lambda o: run_peer("ccdproc_pipeline.py", session, o, colour))
        )
    if "siril" in peers and shutil.which("siril-cli"):
        tools.append(("siril", lambda o: run_peer("siril_pipeline.py", session, o, colour)))
    for name, runner in tools:
        print(f"running {name} ...", flush=True)
        res = runner(out / f"{kind}-{name}")
        quality = {}
        if res.get("stack"):
            try:
                quality = measure_against_truth(
                    _load(res["stack"]), str(session), maps=out / "maps", name=f"{kind}-{name}"
                )
            except Exception as exc:  # a peer's odd output must not stop the comparison
                quality = {"error": repr(exc)}
        rows.append(_row(name, res, quality))
        # a full-size run leaves tens of GB of intermediate frames; the table is what counts
        for sub in (out / f"{kind}-{name}").glob("*"):
            if sub.is_dir():
                shutil.rmtree(sub, ignore_errors=True)
    _equal_resolution(rows, session)
    if not keep:
        shutil.rmtree(session)
        session.with_name(session.name + ".done").unlink(missing_ok=True)
    return rows


def scaling(size: tuple[int, int], counts: list[int], out: Path, seed: int) -> list[dict]:
    rows = []
    for n in counts:
        session = out / f"scaling-{n}"
        if session.exists():
            shutil.rmtree(session)
        config = SessionConfig(shape=size, n_lights=n, n_bias=5, n_darks=5, n_flats=5, seed=seed)
        print(f"scaling: {n} lights ...", flush=True)
        simulate_session(session, config)
        res = run_astrostack(session, out / f"scaling-{n}-astrostack")
        rows.append(
            {
                "lights": n,
                "wall_s": res.get("wall_s"),
                "peak_mib": res.get("peak_mib"),
                "s_per_light": res.get("wall_s", float("nan")) / n,
            }
        )
        shutil.rmtree(session)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def render(results: dict) -> str:
    lines = []
    for kind, rows in results["compare"].items():
        lines.append(f"\n### {kind}\n")
        cols = [
            "tool",
            "wall_s",
            "peak_mib",
            "noise_rel",
            "noise_bin_rel",
            "snr_extended",
            "snr_extended_px",
            "background_error",
            "fwhm",
            "snr_matched",
            "fwhm_matched",
            "outliers_per_mpx",
        ]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        ours = rows[0]
        for r in rows[1:]:
            if ours.get("wall_s") and r.get("wall_s"):
                lines.append(
                    f"\nastrostack / {r['tool']}: time {ours['wall_s'] / r['wall_s']:.3f}, "
                    f"peak memory {ours['peak_mib'] / r['peak_mib']:.3f}, "
                    f"SNR {_fmt(ours.get('snr_extended', np.nan) / r.get('snr_extended', np.nan))}"
                    f", FWHM {_fmt(ours.get('fwhm', np.nan) / r.get('fwhm', np.nan))}"
                    f", SNR at equal resolution "
                    f"{_fmt(ours.get('snr_matched', np.nan) / r.get('snr_matched', np.nan))}"
                )
        lines.append("\nStage times (s):\n")
        for r in rows:
            stages = ", ".join(f"{k} {_fmt(v)}" for k, v in r.get("stages", {}).items())
            lines.append(f"- {r['tool']}: {stages}")
    if results.get("scaling"):
        lines.append("\n### astrostack scaling\n")
        lines.append("| lights | wall_s | s_per_light | peak_mib |\n|---|---|---|---|")
        for r in results["scaling"]:
            lines.append(
                f"| {r['lights']} | {_fmt(r['wall_s'])} | {_fmt(r['s_per_light'])} | "
                f"{_fmt(r['peak_mib'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2000x1500", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--lights", type=int, default=30)
    parser.add_argument("--calib", type=int, default=10, help="bias, darks and flats each")
    parser.add_argument("--colour", action="store_true", help="also a colour (RGGB) session")
    parser.add_argument("--no-mono", action="store_true", help="skip the mono session")
    parser.add_argument("--peers", default="ccdproc,siril")
    parser.add_argument("--scaling", default="", help="e.g. 10,40,160")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the simulated sessions in --out and reuse them next time "
        "(same size, lights, calib and seed)",
    )
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    results: dict = {"size": [w, h], "lights": args.lights, "compare": {}}
    kinds = ([] if args.no_mono else [False]) + ([True] if args.colour else [])
    for colour in kinds:
        results["compare"]["colour" if colour else "mono"] = compare(
            (h, w), args.lights, colour, out, peers, args.calib, args.seed, args.keep
        )
    if args.scaling:
        counts = [int(v) for v in args.scaling.split(",")]
        results["scaling"] = scaling((h, w), counts, out, args.seed)
    (out / "compare.json").write_text(json.dumps(results, indent=1, default=float))
    text = render(results)
    (out / "compare.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
