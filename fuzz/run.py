"""Run the fuzz targets of fuzz/targets.py for N iterations each.

Usage::

    python fuzz/run.py                      # every target, 20000 iterations each
    python fuzz/run.py -n 100000 frames header
    python fuzz/run.py --engine atheris -n 50000 frames   # coverage-guided
    python fuzz/run.py --seconds 60         # time budget per target instead

Engines:

- ``mutate`` (default, no extra dependency): seeded mutation fuzzing from a
  corpus of valid inputs (real datagrams of an in-memory handshake, encoded
  frames and transport parameters, real TLS messages) plus random bytes.
  Every crash is recorded (deduplicated by exception type and location) and
  its input saved under ``--crash-dir``.
- ``atheris`` (``pip install atheris``): libFuzzer-driven, one subprocess per
  target with ``-runs=N``; atheris stops at the first crash.

Prints one line per target: iterations, crashes, unique crashes, seconds;
exits 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# fuzz.targets (and so pyquic) is imported lazily: the atheris child must
# instrument pyquic before the first import.


def _corpus() -> dict[str, list[bytes]]:
    """Valid seed inputs per target (see the module docstring)."""
    from fuzz.targets import _capture
    from pyquic.engine import frame as fr
    from pyquic.engine.transport_param import TransportParameters
    from pyquic.tls import messages as tm

    cap = _capture()
    dgrams = cap.c2s + cap.s2c
    frames: list[fr.Frame] = [
        fr.AckFrame([(5, 9), (0, 2)], 3), fr.CryptoFrame(0, b"hello"),
        fr.StreamFrame(4, 100, b"data", True), fr.NewConnectionIdFrame(1, 0, b"\x01" * 8,
                                                                        b"\x02" * 16),
        fr.ConnectionCloseFrame(0x0A, 0x08, b"bye"), fr.MaxStreamsFrame(10, True),
        fr.ResetStreamFrame(0, 1, 10), fr.DatagramFrame(b"dg"), fr.PathChallengeFrame(b"8bytes!!"),
    ]
    frame_seeds = [bytes((pt,)) + f.encode() for f in frames for pt in (0, 3)]
    frame_seeds.append(b"\x03" + b"".join(f.encode() for f in frames))
    tps = [bytes((1,)) + TransportParameters(initial_max_data=1 << 20, max_idle_timeout=30000,
                                             initial_source_connection_id=b"\x01" * 8,
                                             original_destination_connection_id=b"\x02" * 8,
                                             stateless_reset_token=b"\x03" * 16).encode(),
           bytes((0,)) + TransportParameters(initial_source_connection_id=b"").encode()]
    # TLS messages as their decoders see them (index byte + body)
    tls: list[bytes] = []
    from fuzz.targets import _client_hello

    ch = _client_hello()
    body = tm.parse_message(ch)[1]
    tls.append(bytes((0,)) + body)
    tls.append(bytes((11,)) + ch)
    return {
        "header": [b"\x08" + d for d in dgrams],
        "unprotect": [bytes(50) + d for d in dgrams[:4]],
        "packet_mutation": [bytes(range(40))],
        "retry": [b"\x08" + bytes(20)],
        "version_negotiation": [b"\x08" + bytes(20)],
        "frames": frame_seeds,
        "transport_params": tps,
        "tls_messages": tls,
        "tls_server": [b"\x01" * 8, b"\x00" + ch],
        "receive_datagram_garbage": dgrams,
        "receive_datagram_mutated": [bytes((i, i)) for i in range(16)],
        "conn_frames_initial": [f[1:] for f in frame_seeds if f[0] == 0],
        "conn_frames_1rtt": [f[1:] for f in frame_seeds if f[0] == 3],
    }


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One to eight byte-level mutations (flip, set, insert, delete, splice, varint)."""
    b = bytearray(data)
    for _ in range(1 + rng.randrange(8)):
        op = rng.randrange(7)
        n = len(b)
        if op == 0 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice((0, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF,
                                              rng.randrange(256)))
        elif op == 2:
            i = rng.randrange(n + 1)
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and n:
            i = rng.randrange(n)
            del b[i:i + rng.randrange(1, 17)]
        elif op == 4 and corpus:
            other = rng.choice(corpus)
            if other:
                j = rng.randrange(len(other))
                b[rng.randrange(n + 1):] = other[j:j + rng.randrange(1, 64)]
        elif op == 5 and n:
            del b[rng.randrange(n):]
        else:  # a large varint somewhere
            i = rng.randrange(n + 1)
            b[i:i] = rng.choice((b"\x7f\xff", b"\xbf\xff\xff\xff",
                                 b"\xff\xff\xff\xff\xff\xff\xff\xff"))
    return bytes(b)


def fuzz_mutate(name: str, iterations: int, seconds: float | None, seed: int,
                crash_dir: str, verbose: bool) -> tuple[int, int, int]:
    from fuzz.targets import run_one

    rng = random.Random(f"{seed}/{name}")
    corpus = list(_corpus().get(name, [])) or [b""]
    target_corpus = corpus[:]
    seen: dict[str, bytes] = {}
    crashes = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    i = 0
    while i < iterations and (deadline is None or time.monotonic() < deadline):
        i += 1
        r = rng.random()
        if r < 0.1:
            data = rng.randbytes(rng.randrange(0, 1500))
        else:
            data = mutate(rng, rng.choice(target_corpus), corpus)
        crash = run_one(name, data)
        if crash is None:
            if len(target_corpus) < 512 and rng.random() < 0.01:
                target_corpus.append(data)  # grow the pool a little (no coverage data)
            continue
        crashes += 1
        tb = traceback.extract_tb(crash.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
        # the message without numbers separates distinct faults behind one assert
        msg = "".join(ch for ch in str(crash)[:90] if not ch.isdigit())
        key = f"{type(crash).__name__} at {where}: {msg}"
        if key not in seen:
            seen[key] = data
            os.makedirs(crash_dir, exist_ok=True)
            digest = hashlib.sha256(data).hexdigest()[:16]
            path = os.path.join(crash_dir, f"{name}-{digest}.bin")
            with open(path, "wb") as f:
                f.write(data)
            print(f"  CRASH {name}: {key}: {crash!r} (input saved to {path})", flush=True)
            if verbose:
                traceback.print_exception(crash)
    return i, crashes, len(seen)


def fuzz_atheris(name: str, iterations: int, seconds: float | None) -> tuple[int, int, int]:
    args = [sys.executable, os.path.abspath(__file__), "--atheris-child", name,
            f"-atheris_runs={iterations}"]
    if seconds is not None:
        args.append(f"-max_total_time={int(seconds)}")
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=None,
                       check=False)
    runs = iterations
    for line in (p.stderr or "").splitlines():
        if line.startswith("Done "):
            runs = int(line.split()[1])
    crashed = 1 if p.returncode != 0 else 0
    if crashed:
        print((p.stderr or "")[-3000:])
    return runs, crashed, crashed


def _atheris_child(name: str, argv: list[str]) -> None:
    import atheris  # type: ignore[import-not-found]

    with atheris.instrument_imports(include=["pyquic"]):
        import pyquic.engine.connection
        import pyquic.engine.frame
        import pyquic.engine.packet
        import pyquic.engine.transport_param
        import pyquic.tls.context
        import pyquic.tls.messages  # noqa: F401
    from fuzz.targets import ALLOWED, TARGETS

    target: Callable[[bytes], None] = TARGETS[name]

    allowed = () if name.startswith(("receive_datagram", "conn_")) else ALLOWED

    def one(data: bytes) -> None:
        try:
            target(data)
        except allowed:
            pass

    atheris.Setup([sys.argv[0], *argv], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--atheris-child"]:
        _atheris_child(argv[1], argv[2:])
        return 0
    from fuzz.targets import TARGETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    ap.add_argument("-n", "--iterations", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=None, help="time budget per target")
    ap.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crash-dir", default=os.path.join("/tmp", "pyquic-fuzz-crashes"))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    names = a.targets or list(TARGETS)
    for n in names:
        if n not in TARGETS:
            ap.error(f"unknown target {n!r}")
    total_crashes = 0
    print(f"{'target':28} {'iterations':>11} {'crashes':>8} {'unique':>7} {'seconds':>8}")
    for n in names:
        t0 = time.monotonic()
        if a.engine == "atheris":
            its, crashes, uniq = fuzz_atheris(n, a.iterations, a.seconds)
        else:
            its, crashes, uniq = fuzz_mutate(n, a.iterations, a.seconds, a.seed, a.crash_dir,
                                             a.verbose)
        total_crashes += crashes
        print(f"{n:28} {its:>11} {crashes:>8} {uniq:>7} {time.monotonic() - t0:>8.1f}",
              flush=True)
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
