"""Side-by-side benchmark: pyquic's user backend against aioquic and qh3 on loopback.

Usage: ``python bench/run.py [--quick] [--only pyquic,aioquic,qh3] [--size 100M]
[--payload 1200] [--runs 3]`` (see ``--help`` and docs/bench.md).

For every figure and every run a fresh server process and a fresh client
process are started for each implementation (so server and client never share
a GIL, and runs do not share warm state); implementations are interleaved
within a run so background load on the machine spreads evenly. Each cell of
the table is the median over the successful runs; a cell whose runs all
failed shows ``error: ...`` and the table is printed anyway. Every run is
bounded by ``--timeout``.

``--profile DIR`` runs one pyquic bulk transfer with both sides under cProfile
instead, writes ``server.prof``/``client.prof`` to DIR and prints the top
functions by own time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
IMPLS = ("pyquic", "aioquic", "qh3")
SIDES = {"pyquic": "pyquic_side.py", "aioquic": "aioquic_side.py", "qh3": "qh3_side.py"}
PMTUD = "pyquic+pmtud"  # pseudo-implementation: pyquic bulk with PMTU discovery on
NOBUSY = "pyquic-nobusypoll"  # pseudo-implementation: pyquic with PYQUIC_BUSY_POLL=0
#: pyquic variants measured beside the implementations: the metrics each runs
VARIANTS = {PMTUD: ("bulk",), NOBUSY: ("hs", "rr")}
NOTES: set[str] = set()  # remarks printed under the table
PMTU_SIZES: set[int] = set()  # datagram sizes pyquic reached with PMTU discovery


@dataclass
class Row:
    """One table row: a figure, how to read it, and its cells per implementation."""

    metric: str
    key: str  # key in the client's JSON result
    label: str
    higher_is_better: bool = True
    variant: str | None = None  # a pyquic variant's row (VARIANTS): pyquic's column only
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)


def parse_size(text: str) -> int:
    """``100M``, ``1.5G``, ``65536`` -> bytes (decimal units, as goodput is in Mbit/s)."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    return int(float(t) * mult)


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for localhost; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def _tail(path: Path, limit: int = 160) -> str:
    """The last non-empty line of a log file, shortened (for error cells)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


def _kill(proc: subprocess.Popen[Any]) -> None:
    """Stop a side process we started: SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Runner:
    """Starts server/client side processes and collects their JSON results."""

    def __init__(self, opts: argparse.Namespace, cert: str, key: str, workdir: Path) -> None:
        self.opts = opts
        self.cert, self.key = cert, key
        self.workdir = workdir
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env.setdefault("PYTHONHASHSEED", "0")
        self.seq = 0

    def _side_cmd(self, impl: str, role: str, metric: str, port: int, extra: list[str]) -> list[str]:
        o = self.opts
        count = {"hs": o.handshakes, "rr": o.round_trips, "mem": o.connections}.get(metric, 0)
        side = SIDES["pyquic" if impl in VARIANTS else impl]
        cmd = [sys.executable, str(BENCH_DIR / side), role, "--metric", metric,
               "--port", str(port), "--cert", self.cert, "--key", self.key,
               "--payload", str(o.payload), "--size", str(o.size), "--count", str(count)]
        if impl == PMTUD:
            cmd.append("--pmtud")
        return cmd + extra

    def run_once(self, impl: str, metric: str, profile_dir: Path | None = None) -> dict[str, Any]:
        """One measurement: start the server, run the client, return its JSON (or raise)."""
        self.seq += 1
        tag = f"{impl}-{metric}-{self.seq}"
        env = dict(self.env, PYQUIC_BUSY_POLL="0") if impl == NOBUSY else self.env
        srv_err = self.workdir / f"{tag}.server.log"
        cli_err = self.workdir / f"{tag}.client.log"
        extra_s = ["--profile", str(profile_dir / "server.prof")] if profile_dir else []
        extra_c = ["--profile", str(profile_dir / "client.prof")] if profile_dir else []
        timeout = self.opts.timeout
        with open(srv_err, "wb") as serr:
            server = subprocess.Popen(self._side_cmd(impl, "server", metric, 0, extra_s),
                                      stdout=subprocess.PIPE, stderr=serr, env=env,
                                      cwd=str(BENCH_DIR))
        try:
            port = self._wait_ready(server, srv_err, min(60.0, timeout))
            cmd = self._side_cmd(impl, "client", metric, port,
                                 ["--server-pid", str(server.pid)] + extra_c)
            with open(cli_err, "wb") as cerr:
                client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=cerr,
                                          env=env, cwd=str(BENCH_DIR))
                try:
                    out, _ = client.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill(client)
                    raise RuntimeError(f"timeout after {timeout:.0f} s") from None
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
            if client.returncode != 0 or not lines:
                msg = _tail(cli_err) or f"client exit status {client.returncode}"
                raise RuntimeError(msg)
            result: dict[str, Any] = json.loads(lines[-1])
            srv_sizes = self._server_udp_payload(server)
            if srv_sizes is not None:
                result["server_udp_payload"] = srv_sizes[1]
            grew = (result.get("udp_payload", 0) > result.get("udp_payload_start", 1 << 30)
                    or (srv_sizes is not None and srv_sizes[1] > srv_sizes[0]))
            if impl == PMTUD and "na" not in result and not grew:
                result = {"na": "n/a (not implemented)", **result}
            if server.poll() is not None and server.returncode not in (0, None) and not profile_dir:
                raise RuntimeError(f"server died: {_tail(srv_err)}")
            return result
        finally:
            _kill(server)

    def _server_udp_payload(self, server: subprocess.Popen[Any]) -> tuple[int, int] | None:
        """The ``UDP_PAYLOAD <start> <end>`` line a server may print after a transfer."""
        assert server.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(server.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and sel.select(timeout=0.1):
                chunk = os.read(server.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                if b"UDP_PAYLOAD" in buf and buf.endswith(b"\n"):
                    break
        finally:
            sel.close()
        for line in buf.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "UDP_PAYLOAD":
                return int(parts[1]), int(parts[2])
        return None

    def _wait_ready(self, server: subprocess.Popen[Any], log_path: Path, timeout: float) -> int:
        assert server.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(server.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(server.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"server exited: {_tail(log_path)}")
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("READY "):
                        return int(line.split()[1])
            raise RuntimeError("server not ready in time")
        finally:
            sel.close()


def build_rows(opts: argparse.Namespace) -> list[Row]:
    """The table rows for the requested metrics."""
    p = opts.payload
    py = "pyquic" in opts.impls
    nobusy = "(pyquic without busy polling)"
    rows = []
    if "bulk" in opts.metrics:
        rows.append(Row("bulk", "mbit_per_s", f"bulk goodput, Mbit/s ({p} B UDP payload)"))
        if py:
            rows.append(Row("bulk", "mbit_per_s", "bulk goodput, Mbit/s (pyquic with PMTU discovery)",
                            variant=PMTUD))
    if "hs" in opts.metrics:
        rows.append(Row("hs", "handshakes_per_s", "handshakes/s (sequential, ECDSA P-256)"))
        if py:
            rows.append(Row("hs", "handshakes_per_s", f"handshakes/s {nobusy}", variant=NOBUSY))
    if "rr" in opts.metrics:
        rows.append(Row("rr", "rr_per_s", f"round trips/s ({64} B request/response)"))
        if py:
            rows.append(Row("rr", "rr_per_s", f"round trips/s {nobusy}", variant=NOBUSY))
    if "bulk" in opts.metrics:
        rows.append(Row("bulk", "cpu_s_per_gb", f"CPU s per GB bulk ({p} B), client+server",
                        higher_is_better=False))
    if "hs" in opts.metrics:
        rows.append(Row("hs", "cpu_ms_per_hs", "CPU ms per handshake, client+server",
                        higher_is_better=False))
        if py:
            rows.append(Row("hs", "cpu_ms_per_hs", f"CPU ms per handshake {nobusy}",
                            higher_is_better=False, variant=NOBUSY))
    if "rr" in opts.metrics:
        rows.append(Row("rr", "cpu_us_per_rr", "CPU us per round trip, client+server",
                        higher_is_better=False))
        if py:
            rows.append(Row("rr", "cpu_us_per_rr", f"CPU us per round trip {nobusy}",
                            higher_is_better=False, variant=NOBUSY))
    if "mem" in opts.metrics:
        n = opts.connections
        rows.append(Row("mem", "client_kib_per_conn", f"KiB per idle connection, client ({n} open)",
                        higher_is_better=False))
        rows.append(Row("mem", "server_kib_per_conn", f"KiB per idle connection, server ({n} open)",
                        higher_is_better=False))
    return rows


def fmt_num(v: float) -> str:
    """Three significant figures, without scientific notation for table values."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(row: Row, impl: str) -> str:
    """Median of the successful runs, marked (k/n) if some failed; else the error."""
    vals = row.values.get(impl, [])
    if vals:
        text = fmt_num(statistics.median(vals))
        runs = row.runs.get(impl, len(vals))
        return text if len(vals) == runs else f"{text} ({len(vals)}/{runs})"
    if impl in row.errors:
        return row.errors[impl]
    return "-"


def ratio(row: Row, a: str, b: str) -> str:
    """Median(a)/median(b), e.g. pyquic/aioquic; '-' when either is missing."""
    va, vb = row.values.get(a), row.values.get(b)
    if not va or not vb or statistics.median(vb) == 0:
        return "-"
    return f"{statistics.median(va) / statistics.median(vb):.2f}x"


def render(rows: list[Row], impls: list[str]) -> str:
    """The result table as fixed-width text (one row per figure)."""
    header = ["figure (median)", *impls]
    if "pyquic" in impls:
        header += [f"pyquic/{o}" for o in impls if o != "pyquic"]
    table = [header]
    for row in rows:
        var = row.variant
        line = [row.label]
        for i in impls:
            if var is None:
                line.append(cell(row, i))
            else:
                line.append(cell(row, var) if i == "pyquic" else "")
        if "pyquic" in impls:
            for o in impls:
                if o != "pyquic":
                    line.append(ratio(row, "pyquic", o) if var is None else
                                _variant_ratio(rows, row, o))
        table.append(line)
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    out = []
    for k, r in enumerate(table):
        out.append("  ".join(s.ljust(widths[c]) if c == 0 else s.rjust(widths[c])
                             for c, s in enumerate(r)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _variant_ratio(rows: list[Row], row: Row, other: str) -> str:
    """A pyquic variant's figure against the other implementation's in the
    plain row of the same figure (e.g. PMTU goodput against 1200-byte goodput)."""
    base = next((r for r in rows if r.key == row.key and r.variant is None), None)
    assert row.variant is not None
    va, vb = row.values.get(row.variant), base.values.get(other) if base else None
    if not va or not vb:
        return "-"
    return f"{statistics.median(va) / statistics.median(vb):.2f}x"


def measure(opts: argparse.Namespace, runner: Runner, rows: list[Row], impls: list[str]) -> None:
    """Run every figure ``opts.runs`` times, implementations interleaved."""
    for metric in [m for m in ("bulk", "hs", "rr", "mem") if m in opts.metrics]:
        mrows = [r for r in rows if r.metric == metric]
        targets = list(impls)
        if "pyquic" in impls:
            targets += [v for v, metrics in VARIANTS.items() if metric in metrics]
        for run in range(opts.runs):
            for impl in targets:
                log(f"[{metric} run {run + 1}/{opts.runs}] {impl} ...")
                t0 = time.monotonic()
                try:
                    res = runner.run_once(impl, metric)
                except Exception as exc:  # noqa: BLE001 - one failing implementation must not stop the table
                    err = f"error: {exc}"[:120]
                    log(f"    {impl}: {err}")
                    for r in mrows:
                        if r.variant == (impl if impl in VARIANTS else None):
                            r.errors[impl] = err
                            r.runs[impl] = r.runs.get(impl, 0) + 1
                    continue
                if "na" in res:  # the side reports a feature it lacks
                    for r in mrows:
                        if r.variant == (impl if impl in VARIANTS else None):
                            r.errors[impl] = str(res["na"])
                    log(f"    {impl}: {res['na']}")
                    continue
                shown = []
                for r in mrows:
                    if r.variant != (impl if impl in VARIANTS else None):
                        continue
                    r.runs[impl] = r.runs.get(impl, 0) + 1
                    if r.key in res:
                        r.values.setdefault(impl, []).append(float(res[r.key]))
                        shown.append(f"{r.key}={fmt_num(float(res[r.key]))}")
                extra = {k: v for k, v in res.items() if k in ("udp_payload", "server_udp_payload")}
                for v in extra.values():
                    if not isinstance(v, int):
                        continue
                    if impl == PMTUD:
                        PMTU_SIZES.add(v)
                    elif v != opts.payload:
                        NOTES.add(f"note: {impl} used {v}-byte datagrams, not the configured "
                                  f"{opts.payload} (what its engine sends at most)")
                log(f"    {impl}: {', '.join(shown)} ({time.monotonic() - t0:.1f} s){' ' + str(extra) if extra else ''}")


def profile(opts: argparse.Namespace, runner: Runner, out_dir: Path, impl: str) -> None:
    """One measurement of ``impl`` with both sides under cProfile; print the top by tottime."""
    import pstats

    out_dir.mkdir(parents=True, exist_ok=True)
    metric = opts.profile_metric
    log(f"profiling {impl} {metric} into {out_dir}")
    res = runner.run_once(impl, metric, profile_dir=out_dir)
    print(f"{impl} {metric} under cProfile: {json.dumps(res)}")
    for side in ("server", "client"):
        path = out_dir / f"{side}.prof"
        for _ in range(50):  # the server dumps its stats on SIGTERM; give it a moment
            if path.exists() and path.stat().st_size > 0:
                break
            time.sleep(0.1)
        if not path.exists():
            print(f"\n{side}: no profile written")
            continue
        print(f"\n===== {side}: top {opts.profile_top} by tottime =====")
        pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(opts.profile_top)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults per the benchmark issue; --quick shrinks them)."""
    p = argparse.ArgumentParser(description="pyquic vs aioquic vs qh3 on loopback")
    p.add_argument("--size", type=parse_size, default=None,
                   help="bulk transfer size, e.g. 100M (default 100M; --quick 5M)")
    p.add_argument("--payload", type=int, default=1200,
                   help="maximum UDP payload size for every implementation, 1200-1500 (default 1200)")
    p.add_argument("--runs", type=int, default=None, help="runs per figure, median reported (default 3)")
    p.add_argument("--handshakes", type=int, default=None, help="handshakes per run (default 200)")
    p.add_argument("--round-trips", type=int, default=None, help="round trips per run (default 5000)")
    p.add_argument("--connections", type=int, default=None,
                   help="idle connections for the memory figure (default 1000)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run (default 300)")
    p.add_argument("--only", default="", help="comma-separated subset of pyquic,aioquic,qh3")
    p.add_argument("--metrics", default="bulk,hs,rr,mem", help="subset of bulk,hs,rr,mem")
    p.add_argument("--quick", action="store_true", help="smoke test: small sizes, 1 run")
    p.add_argument("--json", default="", help="also write the raw results to this file")
    p.add_argument("--logs", default="", metavar="DIR",
                   help="keep every side process's stderr in DIR (default: a temporary directory)")
    p.add_argument("--profile", default="", metavar="DIR",
                   help="profile one measurement (default: pyquic bulk) under cProfile instead")
    p.add_argument("--profile-impl", default="pyquic", choices=IMPLS)
    p.add_argument("--profile-metric", default="bulk", choices=("bulk", "hs", "rr", "mem"))
    p.add_argument("--profile-top", type=int, default=25)
    o = p.parse_args(argv)
    q = o.quick
    o.size = o.size if o.size is not None else (5 * 10**6 if q else 100 * 10**6)
    o.runs = o.runs if o.runs is not None else (1 if q else 3)
    o.handshakes = o.handshakes if o.handshakes is not None else (20 if q else 200)
    o.round_trips = o.round_trips if o.round_trips is not None else (500 if q else 5000)
    o.connections = o.connections if o.connections is not None else (50 if q else 1000)
    o.timeout = o.timeout if o.timeout is not None else (60.0 if q else 300.0)
    if not 1200 <= o.payload <= 1500:
        p.error("--payload must be within 1200-1500")
    o.impls = [i.strip() for i in o.only.split(",") if i.strip()] if o.only else list(IMPLS)
    bad = [i for i in o.impls if i not in IMPLS]
    if bad:
        p.error(f"unknown implementation(s) {bad}; choose from {IMPLS}")
    o.impls = [i for i in IMPLS if i in o.impls]  # fixed column order
    o.metrics = [m.strip() for m in o.metrics.split(",") if m.strip()]
    if any(m not in ("bulk", "hs", "rr", "mem") for m in o.metrics):
        p.error("--metrics takes a subset of bulk,hs,rr,mem")
    if o.runs < 1 or o.size < 8:
        p.error("--runs must be >= 1 and --size >= 8")
    return o


def main(argv: list[str] | None = None) -> int:
    """Measure, then print the table on stdout."""
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyquic-bench-") as tmp:
        workdir = Path(opts.logs) if opts.logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(workdir)
        runner = Runner(opts, cert, key, workdir)
        if opts.profile:
            profile(opts, runner, Path(opts.profile), opts.profile_impl)
            return 0
        rows = build_rows(opts)
        log(f"benchmark: {', '.join(opts.impls)}; bulk {opts.size} B, payload {opts.payload} B, "
            f"{opts.handshakes} handshakes, {opts.round_trips} round trips, "
            f"{opts.connections} idle connections, {opts.runs} run(s), timeout {opts.timeout:.0f} s")
        t0 = time.monotonic()
        measure(opts, runner, rows, opts.impls)
        log(f"done in {time.monotonic() - t0:.0f} s")
    print(render(rows, opts.impls))
    if PMTU_SIZES:
        lo, hi = min(PMTU_SIZES), max(PMTU_SIZES)
        NOTES.add("note: with PMTU discovery pyquic's datagrams grew to "
                  + (f"{hi}" if lo == hi else f"{lo}-{hi}") + " bytes (client/server, all runs)")
    for note in sorted(NOTES):
        print(note)
    print(f"\n(median of {opts.runs} run(s); {os.cpu_count()} CPUs; Python "
          f"{sys.version.split()[0]}; ratios > 1 mean pyquic is higher: better for rates, "
          f"worse for memory and CPU)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            [{"label": r.label, "values": r.values, "errors": r.errors} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
