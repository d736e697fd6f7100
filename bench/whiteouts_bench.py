"""How long does the analysis take on an image full of whiteouts? (issue 11, case 12)

Two layers: the first ``--files`` files spread over ``--whiteouts`` package directories,
each with a ``__pycache__`` directory; the second deletes every ``__pycache__`` directory
with a ``.wh.`` whiteout (as ``find / -name __pycache__ -exec rm -rf`` in a later RUN does).
Real tar streams are built in memory and read by the real layer reader (``walk_tar``),
then ``image_facts`` stacks them and computes wasted space. Prints the seconds of each
part for a few sizes (wall clock, plus the analysis' process CPU time, which a busy shared
machine does not inflate), and whether the target holds (100k files + 10k whiteouts
analysed in < 2 s).

Run: ``.venv/bin/python bench/whiteouts_bench.py [--files 100000 --whiteouts 10000]``
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

from bot.image.analysis import image_facts
from bot.image.layers import LayerScan, walk_tar
from bot.image.source import LayerBlob, Platform, ResolvedImage

TARGET_SECONDS = 2.0


def layer_tars(files: int, whiteouts: int) -> tuple[bytes, bytes]:
    per_dir = max(files // whiteouts, 1)
    lower = io.BytesIO()
    with tarfile.open(fileobj=lower, mode="w", format=tarfile.PAX_FORMAT) as tf:
        made = 0
        for d in range(whiteouts):
            for j in range(per_dir):
                if made >= files:
                    break
                name = f"usr/lib/python3/pkg{d}/{'__pycache__/' if j % 2 == 0 else ''}m{j}.pyc"
                info = tarfile.TarInfo(name)
                info.size = 16
                tf.addfile(info, io.BytesIO(b"x" * 16))
                made += 1
    upper = io.BytesIO()
    with tarfile.open(fileobj=upper, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(whiteouts):
            tf.addfile(tarfile.TarInfo(f"usr/lib/python3/pkg{d}/.wh.__pycache__"), io.BytesIO())
    return lower.getvalue(), upper.getvalue()


def resolved_for(scans: list[LayerScan]) -> ResolvedImage:
    async def never():
        yield b""

    blobs = [LayerBlob(s.digest, None, "none", never) for s in scans]
    history = [{"created_by": f"RUN step {i}"} for i in range(len(scans))]
    return ResolvedImage(
        "bench/whiteouts:1",
        "registry",
        None,
        Platform(),
        [],
        {"config": {}, "history": history},
        blobs,
    )


def measure(files: int, whiteouts: int) -> tuple[float, float, float, int]:
    lower, upper = layer_tars(files, whiteouts)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        scans = [
            walk_tar(io.BytesIO(lower), "sha256:lower", Path(tmp)),
            walk_tar(io.BytesIO(upper), "sha256:upper", Path(tmp)),
        ]
        read = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    facts = image_facts(resolved_for(scans), scans)
    analysed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return read, analysed, cpu, facts.wasted_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--whiteouts", type=int, default=10_000)
    args = parser.parse_args()
    print(
        f"{'files':>8} {'whiteouts':>9} {'read tar s':>10} {'analysis s':>10} "
        f"{'(cpu s)':>8} {'wasted B':>9}"
    )
    sizes = [(args.files // 10, args.whiteouts // 10), (args.files // 2, args.whiteouts // 2)]
    sizes.append((args.files, args.whiteouts))
    result = 0.0
    for files, whiteouts in sizes:
        read, analysed, cpu, wasted = measure(files, whiteouts)
        print(f"{files:>8} {whiteouts:>9} {read:>10.2f} {analysed:>10.2f} {cpu:>8.2f} {wasted:>9}")
        result = analysed
    verdict = "ok" if result < TARGET_SECONDS else "MISSED"
    print(
        f"target: {args.files} files + {args.whiteouts} whiteouts analysed in "
        f"< {TARGET_SECONDS:g} s: {result:.2f} s ({verdict})"
    )


if __name__ == "__main__":
    main()
