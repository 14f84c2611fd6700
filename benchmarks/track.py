#!/usr/bin/env python3
"""Kernel performance tracker: runs the Google Benchmark suites, stamps and stores the results, compares them with a
committed baseline (noise-aware), prints a regression table and renders an SVG chart of each kernel's fraction of
the copy bandwidth measured in the same run.

  bazel run //benchmarks:track -- SUITE_OR_DIR... [--repetitions=5] [--out=results.json] [--chart=frac.svg]
                                   [--baseline=benchmarks/baselines/h100.json] [--update_baseline]
  python3 benchmarks/track.py --from_json=a.json,b.json ...   (Google Benchmark JSON, or an earlier --out file)

SUITE_OR_DIR: benchmark binaries, or directories whose *_benchmark files are run (e.g. the staged .device/bin).
Each suite runs with --benchmark_repetitions=N; the tracker keeps every repetition's time and compares medians.
A benchmark counts as a regression (improvement) when its median time rose (fell) by more than
max(--threshold, --noise_factor x the larger relative spread (IQR / median) of the run and of the baseline), so
a noisy benchmark needs a larger change to be flagged. Exit status 1 when any regression is found (unless
--no_fail). The baseline changes only with --update_baseline, which writes this run's results over it.

Plain Python 3 with no third-party modules, so the same file runs on the GPU machine.
"""
import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys


def run_quiet(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def stamp(commit):
    gpu = run_quiet(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]).splitlines()
    name, driver = (gpu[0].split(", ") + [""])[:2] if gpu else ("", "")
    cuda = ""
    for line in run_quiet(["nvidia-smi"]).splitlines():
        if "CUDA Version" in line:
            cuda = line.split("CUDA Version:")[1].split()[0]
    nvcc = run_quiet(["nvcc", "--version"]).splitlines()
    if not commit:
        root = os.environ.get("BUILD_WORKSPACE_DIRECTORY", os.getcwd())
        commit = run_quiet(["git", "-C", root, "rev-parse", "HEAD"]) or "unknown"
    return {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": name,
        "driver": driver,
        "cuda_driver_api": cuda,
        "nvcc": nvcc[-1] if nvcc else "",
        "host": os.uname().nodename,
    }


def suites(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(f for f in glob.glob(os.path.join(p, "*_benchmark")) if os.access(f, os.X_OK))
        else:
            out.append(p)
    return out


def run_suite(binary, repetitions, min_time, extra):
    json_path = binary.rstrip("/").split("/")[-1] + ".track.json"
    cmd = [binary, f"--benchmark_repetitions={repetitions}", f"--benchmark_out={json_path}",
           "--benchmark_out_format=json"] + ([f"--benchmark_min_time={min_time}"] if min_time else []) + extra
    print("running", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        print(f"warning: {binary} exited with {proc.returncode}", file=sys.stderr)
    with open(json_path) as f:
        data = json.load(f)
    os.remove(json_path)
    return data


def to_us(value, unit):
    return value * {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]


def collect(gbench, suite_name, into):
    """Google Benchmark JSON -> {name: {suite, times_us, median_us, spread, frac_of_d2d, bytes_per_second}}."""
    for b in gbench.get("benchmarks", []):
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            if b.get("error_occurred"):
                print(f"warning: {b['name']}: {b.get('error_message', '')}", file=sys.stderr)
            continue
        name = b.get("run_name", b["name"])
        if name.endswith("/manual_time"):
            name = name[: -len("/manual_time")]
        entry = into.setdefault(name, {"suite": suite_name, "times_us": [], "frac_of_d2d": [], "bytes_per_second": []})
        entry["times_us"].append(to_us(b["real_time"], b.get("time_unit", "ns")))
        if "frac_of_d2d" in b:
            entry["frac_of_d2d"].append(b["frac_of_d2d"])
        if "bytes_per_second" in b:
            entry["bytes_per_second"].append(b["bytes_per_second"])
    for entry in into.values():
        entry["median_us"] = statistics.median(entry["times_us"])
        entry["spread"] = relative_spread(entry["times_us"])
        for key in ("frac_of_d2d", "bytes_per_second"):
            entry[key + "_median"] = statistics.median(entry[key]) if entry[key] else None


def relative_spread(times):
    """Interquartile range over the median (0 for fewer than 3 samples: no estimate of the noise)."""
    if len(times) < 3:
        return 0.0
    q = statistics.quantiles(times, n=4, method="inclusive")
    return (q[2] - q[0]) / statistics.median(times)


def compare(run, base, threshold, noise_factor):
    rows = []
    for name in sorted(set(run) | set(base)):
        if name not in run or name not in base:
            rows.append((name, "new" if name in run else "missing", None, None, None, None))
            continue
        r, b = run[name], base[name]
        change = r["median_us"] / b["median_us"] - 1
        allowed = max(threshold, noise_factor * max(r["spread"], b["spread"]))
        verdict = "regression" if change > allowed else "improvement" if change < -allowed else "same"
        rows.append((name, verdict, b["median_us"], r["median_us"], change, allowed))
    return rows


def print_table(rows, verbose):
    shown = [r for r in rows if verbose or r[1] != "same"]
    print(f"{'benchmark':<72} {'baseline us':>12} {'now us':>12} {'change':>8} {'allowed':>8}  verdict")
    for name, verdict, b, r, change, allowed in shown:
        if b is None:
            print(f"{name:<72} {'':>12} {'':>12} {'':>8} {'':>8}  {verdict}")
        else:
            print(f"{name:<72} {b:>12.2f} {r:>12.2f} {change:>+8.1%} {allowed:>8.1%}  {verdict}")
    counts = {v: sum(1 for r in rows if r[1] == v) for v in ("regression", "improvement", "same", "new", "missing")}
    print(", ".join(f"{n} {v}" for v, n in counts.items()))
    return counts["regression"]


def svg_chart(run, stamp_info, path, forward_target=0.90, backward_target=0.85):
    """Horizontal bars: each benchmark's median fraction of the same-run D2D copy bandwidth."""
    items = [(n, e["frac_of_d2d_median"]) for n, e in sorted(run.items())
             if e.get("frac_of_d2d_median") is not None and not n.startswith("d2d_copy")]
    bar_h, left, width, top = 16, 470, 420, 40
    height = top + bar_h * len(items) + 40
    scale = width / 1.2  # bars up to 120% of copy
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<text x="10" y="16" font-size="13">Fraction of same-run D2D copy bandwidth — {stamp_info.get("gpu", "")}'
           f' — commit {stamp_info.get("commit", "")[:10]} — {stamp_info.get("date", "")}</text>']
    for frac, label, color in ((1.0, "copy", "#888"), (forward_target, "fwd target", "#2a2"),
                               (backward_target, "bwd target", "#a62")):
        x = left + frac * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 30}" stroke="{color}" '
                   f'stroke-dasharray="4,3"/><text x="{x + 2:.1f}" y="{top - 10}" fill="{color}">{label}</text>')
    for i, (name, frac) in enumerate(items):
        y = top + i * bar_h
        color = "#3465a4" if name.startswith("fused") else "#bbb"
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(name[:70])}</text>')
        out.append(f'<rect x="{left}" y="{y + 2}" width="{max(frac, 0) * scale:.1f}" height="{bar_h - 4}" '
                   f'fill="{color}"/><text x="{left + max(frac, 0) * scale + 4:.1f}" y="{y + 12}">{frac:.0%}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", help="benchmark binaries or directories of *_benchmark binaries")
    p.add_argument("--from_json", default="",
                   help="comma-separated Google Benchmark JSON files (or tracker --out files) instead of running")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--min_time", default="", help="passed as --benchmark_min_time (e.g. 0.1)")
    p.add_argument("--filter", default="", help="passed as --benchmark_filter")
    p.add_argument("--baseline", default="benchmarks/baselines/h100.json")
    p.add_argument("--out", default="", help="write this run (stamp + results) as JSON")
    p.add_argument("--chart", default="", help="write an SVG chart of fraction of copy bandwidth")
    p.add_argument("--threshold", type=float, default=0.05, help="smallest relative change flagged")
    p.add_argument("--noise_factor", type=float, default=3.0, help="x the relative IQR of run and baseline")
    p.add_argument("--commit", default="", help="stamp this commit instead of asking git")
    p.add_argument("--update_baseline", action="store_true", help="write this run over --baseline")
    p.add_argument("--no_fail", action="store_true", help="exit 0 even with regressions")
    p.add_argument("--verbose", action="store_true", help="print unchanged benchmarks too")
    args = p.parse_args(argv)

    # Under `bazel run` the working directory is the runfiles tree: resolve relative paths against the workspace.
    root = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    resolve = (lambda x: x if not x or os.path.isabs(x) else os.path.join(root, x)) if root else (lambda x: x)

    results = {}
    if args.from_json:
        for path in args.from_json.split(","):
            with open(resolve(path)) as f:
                data = json.load(f)
            if "stamp" in data and "results" in data:  # a tracker run (--out) or a baseline
                results.update(data["results"])
            else:
                collect(data, os.path.basename(path).split(".")[0], results)
    else:
        binaries = suites([resolve(s) for s in args.suites])
        if not binaries:
            p.error("no benchmark suites given (binaries, directories, or --from_json)")
        extra = [f"--benchmark_filter={args.filter}"] if args.filter else []
        for binary in binaries:
            collect(run_suite(binary, args.repetitions, args.min_time, extra), os.path.basename(binary), results)
    run = {"stamp": stamp(args.commit), "results": results}
    if args.out:
        with open(resolve(args.out), "w") as f:
            json.dump(run, f, indent=1, sort_keys=True)
    if args.chart:
        svg_chart(results, run["stamp"], resolve(args.chart))

    baseline_path = resolve(args.baseline)
    regressions = 0
    if os.path.exists(baseline_path):
        with open(baseline_path) as f:
            base = json.load(f)
        print(f"baseline: {args.baseline} (commit {base['stamp'].get('commit', '')[:10]}, "
              f"{base['stamp'].get('gpu', '')}, {base['stamp'].get('date', '')})")
        regressions = print_table(compare(results, base["results"], args.threshold, args.noise_factor),
                                  args.verbose)
    else:
        print(f"no baseline at {args.baseline}; run with --update_baseline to create it")
    if args.update_baseline:
        with open(baseline_path, "w") as f:
            json.dump(run, f, indent=1, sort_keys=True)
        print(f"baseline written: {args.baseline}")
        return 0
    return 1 if regressions and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
