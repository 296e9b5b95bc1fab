"""Coverage-guided fuzzing of the one decoding path: ``make fuzz`` (``python -m tests.fuzz_images``).

libFuzzer (through atheris) mutates a seed corpus, valid images of every accepted format and mode
plus the suite's hostile inputs, towards new code paths in Pillow's Python plug-ins and in
``skinlesion.data.images``. Every input must decode to RGB within the limits or raise
ImageDecodeError (the contract :func:`tests.hostile.attempt` checks); any other exception, a hang
over ``--timeout`` seconds or memory over ``--rss-mb`` is a crash, saved under
``outputs/fuzz/`` as ``crash-*``, ``timeout-*`` or ``oom-*``. Prints and writes a summary
(``outputs/fuzz/summary.json``): inputs run, corpus size, crashes. Exit status 1 on any crash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

MAX_SEED_BYTES = 100_000


def seeds() -> list[bytes]:
    from skinlesion.data.images import PHOTO_FORMATS
    from tests.hostile import encode, hostile_corpus, noisy, unusual_but_valid

    base = [encode(noisy(40, 30, seed=s), fmt) for s, fmt in enumerate(PHOTO_FORMATS)]
    cases = [data for _, data, _ in hostile_corpus()] + [data for _, data, _ in unusual_but_valid()]
    return [d for d in base + cases if 0 < len(d) <= MAX_SEED_BYTES]


def worker(libfuzzer_args: list[str]) -> None:
    """The fuzzed process: instrument Pillow and the decoder, then hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["PIL", "skinlesion", "tests"]):
        from PIL import Image

        Image.init()  # import every plug-in now, so that all of them are instrumented
        from tests.hostile import attempt

    def one_input(data: bytes) -> None:
        attempt(data, "fuzz")

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def run(seconds: int, out: Path, timeout: int, rss_mb: int) -> int:
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    before = {p.name for p in out.glob("*-*") if p.is_file()}
    flags = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        f"-max_len={MAX_SEED_BYTES}",
        f"-artifact_prefix={out}/",
        "-print_final_stats=1",
    ]
    started = time.monotonic()
    with open(out / "fuzz.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz_images", "--worker", *flags, str(corpus)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    text = (out / "fuzz.log").read_text(errors="replace")
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", text) or re.findall(r"Done (\d+) runs", text)
    crashes = sorted(
        p.name
        for p in out.glob("*-*")
        if p.is_file()
        and p.name not in before
        and p.name.split("-")[0] in ("crash", "timeout", "oom", "leak")
    )
    summary = {
        "command": f"make fuzz FUZZ_SECONDS={seconds}",
        "seconds": round(time.monotonic() - started, 1),
        "inputs_run": int(runs[-1]) if runs else 0,
        "corpus_files": sum(1 for _ in corpus.iterdir()),
        "crashes": len(crashes),
        "artifacts": crashes,
        "exit_status": proc.returncode,
        "log": str(out / "fuzz.log"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"fuzz: {summary['inputs_run']} inputs in {summary['seconds']} s, corpus {summary['corpus_files']} "
        f"files, {len(crashes)} crashes{': ' + ', '.join(crashes) if crashes else ''} (log: {summary['log']})"
    )
    return 1 if crashes or proc.returncode != 0 else 0


def main() -> int:
    if "--worker" in sys.argv:
        worker([a for a in sys.argv[1:] if a != "--worker"])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120, help="how long to fuzz")
    parser.add_argument("--out", type=Path, default=Path("outputs/fuzz"), help="corpus, crashes, summary")
    parser.add_argument("--timeout", type=int, default=10, help="seconds before one input counts as a hang")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory before an input counts as a crash")
    args = parser.parse_args()
    return run(args.seconds, args.out, args.timeout, args.rss_mb)


if __name__ == "__main__":
    sys.exit(main())
