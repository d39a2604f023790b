"""Coverage-guided fuzzing of the frame readers (FITS and TIFF byte strings) with atheris.

Every input is written to a scratch file named ``.fits`` or ``.tif`` (chosen from its first
bytes) and read with :func:`astrostack.io.read_meta` then :func:`astrostack.io.read_frame`.
The readers' contract is that a bad file raises :class:`astrostack.io.FrameReadError`
naming it; **any other exception is a finding**.  Findings are de-duplicated by
(exception type, innermost astrostack frame) and written to a JSON file with a reproducer
input each, and the fuzzer keeps going (``--stop`` stops at the first one instead).

Usage::

    pip install atheris
    python bench/fuzz_readers.py --seconds 120 --findings fuzz-findings.json
    python bench/fuzz_readers.py --replay fuzz-findings.json      # re-check the reproducers

The seed corpus is small valid files: FITS of every BITPIX, with ``BZERO``/``BSCALE``,
an RGB cube, an image extension after an empty primary, a table; TIFFs mono, RGB
contiguous and planar, tiled, float.  Not a test by itself: ``test_corpus.py`` has a
``fuzz``-marked test that runs it for a few seconds.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def seed_files() -> list[bytes]:
    """Small valid FITS and TIFF files as bytes."""
    import tifffile
    from astropy.io import fits

    rng = np.random.default_rng(0)
    out: list[bytes] = []

    def fits_blob(hdul: fits.HDUList) -> bytes:
        buf = io.BytesIO()
        hdul.writeto(buf)
        return buf.getvalue()

    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64):
        data = (rng.random((6, 5)) * 100).astype(dtype)
        hdu = fits.PrimaryHDU(data)
        hdu.header["IMAGETYP"] = "Light Frame"
        hdu.header["EXPTIME"] = 30.0
        out.append(fits_blob(fits.HDUList([hdu])))
    scaled = fits.PrimaryHDU(rng.integers(-100, 100, (4, 4)).astype(np.int16))
    scaled.header["BZERO"], scaled.header["BSCALE"] = 1000.0, 0.5
    scaled.header["BAYERPAT"], scaled.header["ROWORDER"] = "RGGB", "BOTTOM-UP"
    out.append(fits_blob(fits.HDUList([scaled])))
    out.append(fits_blob(fits.HDUList([fits.PrimaryHDU(rng.random((3, 4, 4)).astype(">f4"))])))
    out.append(
        fits_blob(fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((5, 7), np.int16))]))
    )
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    out.append(fits_blob(fits.HDUList([fits.PrimaryHDU(), table])))

    def tiff_blob(data: np.ndarray, **kw) -> bytes:
        buf = io.BytesIO()
        tifffile.imwrite(buf, data, **kw)
        return buf.getvalue()

    out.append(tiff_blob(rng.integers(0, 65535, (6, 5)).astype(np.uint16)))
    out.append(tiff_blob(rng.integers(0, 255, (4, 4, 3)).astype(np.uint8), photometric="rgb"))
    out.append(
        tiff_blob(
            rng.integers(0, 65535, (3, 4, 4)).astype(np.uint16),
            photometric="rgb",
            planarconfig="separate",
        )
    )
    out.append(tiff_blob(rng.random((16, 16)).astype(np.float32), tile=(16, 16)))
    out.append(tiff_blob(rng.integers(0, 65535, (8, 8)).astype(np.uint16), compression="zlib"))
    return out


def suffix_for(data: bytes) -> str:
    """``.fits`` for FITS-looking bytes, ``.tif`` for TIFF-looking bytes, else by length."""
    if data.startswith(b"SIMPLE"):
        return ".fits"
    if data[:4] in _TIFF_MAGICS:
        return ".tif"
    return ".fits" if len(data) % 2 else ".tif"


class Harness:
    """Writes each input to a scratch file and reads it; records unexpected exceptions."""

    def __init__(self, scratch: Path, stop: bool = False):
        self.scratch = scratch
        self.stop = stop
        self.findings: dict[str, dict] = {}
        self.runs = 0

    def one(self, data: bytes) -> None:
        from astrostack.io import FrameReadError, read_frame, read_meta

        self.runs += 1
        path = self.scratch / f"input{suffix_for(data)}"
        path.write_bytes(data)
        for reader in (read_meta, read_frame):
            try:
                reader(path)
            except FrameReadError:
                return
            except Exception as exc:
                self.record(reader.__name__, exc, data)
                if self.stop:
                    raise
                return

    def record(self, reader: str, exc: BaseException, data: bytes) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if "astrostack" in f.filename]
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        last = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        key = f"{type(exc).__name__} @ {where} ({last})"
        if key in self.findings:
            self.findings[key]["count"] += 1
            return
        self.findings[key] = {
            "key": key,
            "exception": type(exc).__name__,
            "message": str(exc)[:300],
            "reader": reader,
            "astrostack_frame": where,
            "raised_at": last,
            "count": 1,
            "input_base64": base64.b64encode(data[:20000]).decode("ascii"),
            "input_suffix": suffix_for(data),
        }
        sys.stderr.write(f"\nFINDING {key}: {str(exc)[:200]}\n")


def _write_findings(harness: Harness, path: Path) -> None:
    summary = {"runs": harness.runs, "findings": list(harness.findings.values())}
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, path)


def replay(path: Path) -> int:
    """Re-run the reproducers of a findings file; print which still fail."""
    from astrostack.io import FrameReadError, read_frame, read_meta

    findings = json.loads(path.read_text())["findings"]
    still = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in findings:
            if f["exception"] in ("timeout", "oom", "slow-unit"):
                print(f"{f['key']}: not replayed (would hang); save input_base64 to test it")
                still += 1
                continue
            p = Path(tmp) / f"replay{f['input_suffix']}"
            p.write_bytes(base64.b64decode(f["input_base64"]))
            try:
                read_meta(p)
                read_frame(p)
                status = "ok now (read)"
            except FrameReadError as exc:
                status = f"ok now (FrameReadError: {exc.reason[:80]})"
            except Exception as exc:
                status = f"STILL {type(exc).__name__}: {str(exc)[:120]}"
                still += 1
            print(f"{f['exception']} @ {f['astrostack_frame']}: {status}")
    return 1 if still else 0


def _child(corpus: Path, scratch: Path, findings: Path, seconds: int, seed: int, stop: bool):
    """The fuzzing process (libFuzzer ends it with exit(), so it runs apart)."""
    import atheris

    with atheris.instrument_imports(include=["astrostack.io", "astropy.io.fits", "tifffile"]):
        import astropy.io.fits  # noqa: F401
        import tifffile  # noqa: F401

        import astrostack.io  # noqa: F401

    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    harness = Harness(scratch, stop=stop)
    if findings.exists():  # a previous child (stopped by a timeout) already found these
        previous = json.loads(findings.read_text())
        harness.runs = previous["runs"]
        harness.findings = {f["key"]: f for f in previous["findings"]}
    _write_findings(harness, findings)
    seen = [0]

    def one(data: bytes) -> None:
        harness.one(data)
        if len(harness.findings) != seen[0] or harness.runs % 2000 == 0:
            seen[0] = len(harness.findings)
            _write_findings(harness, findings)

    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={seconds}",
            f"-seed={seed}",
            "-rss_limit_mb=3072",
            "-timeout=10",
            f"-artifact_prefix={findings.parent}/artifact-",
            "-max_len=20000",
            "-print_final_stats=1",
        ],
        one,
    )
    atheris.Fuzz()


def _collect_artifacts(findings: Path) -> bool:
    """Move libFuzzer's timeout/crash/oom artifacts into the findings file; True if any."""
    found = False
    for art in sorted(findings.parent.glob("artifact-*")):
        kind = art.name.split("-")[1]  # timeout, crash, oom, slow-unit
        data = art.read_bytes()
        summary = (
            json.loads(findings.read_text()) if findings.exists() else {"runs": 0, "findings": []}
        )
        key = f"{kind} ({suffix_for(data)}, {len(data)} bytes)"
        summary["findings"].append(
            {
                "key": key,
                "exception": kind,
                "message": f"libFuzzer {kind} on this input",
                "reader": "read_meta/read_frame",
                "astrostack_frame": "?",
                "raised_at": "?",
                "count": 1,
                "input_base64": base64.b64encode(data).decode("ascii"),
                "input_suffix": suffix_for(data),
            }
        )
        findings.write_text(json.dumps(summary, indent=1))
        art.unlink()
        found = True
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer (or replay findings); exit status 1 if anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="fuzzing time")
    parser.add_argument("--findings", type=Path, default=None, help="JSON file for findings")
    parser.add_argument("--stop", action="store_true", help="stop at the first finding")
    parser.add_argument("--replay", type=Path, default=None, help="re-check a findings file")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer seed")
    parser.add_argument("--child", nargs=3, type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay)
    if args.child is not None:
        _child(*args.child, args.seconds, args.seed, args.stop)
        return 0

    import subprocess

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-scratch-", dir=shm) as scratch,
        tempfile.TemporaryDirectory(prefix="fuzz-corpus-") as corpus,
    ):
        for i, blob in enumerate(seed_files()):
            (Path(corpus) / f"seed{i:02d}").write_bytes(blob)
        findings = (args.findings or Path(scratch) / "findings.json").resolve()
        findings.unlink(missing_ok=True)
        deadline = time.monotonic() + args.seconds
        code = 0
        while (left := int(deadline - time.monotonic())) > 2:
            cmd = [sys.executable, __file__, "--seconds", str(left), "--seed", str(args.seed)]
            cmd += ["--child", corpus, scratch, str(findings)] + (["--stop"] if args.stop else [])
            code = subprocess.run(cmd, check=False).returncode
            if not _collect_artifacts(findings) or args.stop:
                break  # ended normally (time is up) or stop at the first finding
        summary = json.loads(findings.read_text()) if findings.exists() else {"findings": None}
    if summary["findings"] is None:
        print(f"fuzzer failed to start (exit {code})")
        return 2
    print(f"{summary['runs']} inputs, {len(summary['findings'])} finding(s)")
    for f in summary["findings"]:
        print(f"  {f['exception']} in {f['reader']} @ {f['astrostack_frame']} "
              f"(raised at {f['raised_at']}, {f['count']}x): {f['message'][:150]}")  # fmt: skip
    return 1 if summary["findings"] or code else 0


if __name__ == "__main__":
    sys.exit(main())
