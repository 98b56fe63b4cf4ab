"""The command line of the driver: its options and the sizes of a quick and of a full run, the facts
about this machine recorded with the results, and `main`, which runs the phases in their order,
writes results.json and the report (or, with --report-only, only the report).

`python -m camunda_bench` runs `main`; the package's docstring is its --help text."""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

from . import __doc__ as HELP_TEXT
from .common import BENCH, JAVA_OPTS, REPO, cleanup, log
from .comparisons import (
    COMPARE_MARKERS,
    LEDGER_MARKERS,
    LEDGER_PARTS_MARKERS,
    MAX_TASKS_MARKERS,
    STRUCTURE_MARKERS,
    compare_section,
    ledger_parts_section,
    ledger_section,
    max_tasks_section,
    structure_section,
)
from .contenders import ALL, CLUSTER_ALL, EXTRA, LEDGER_PARTS, MAX_TASKS_SWEEP, contenders, run_contender
from .engines import Engine
from .measurements import loadavg
from .neighbour import NEIGHBOUR_MARKERS, neighbour_section, run_neighbour
from .phases import run_cluster, run_idle, run_mismatch, run_overhead, run_pg_vs_h2
from .report import update_benchmarks_md, write_reports

PHASES = ["throughput", "idle", "overhead", "mismatch", "cluster", "pg-h2"]
HISTORY_LEVELS = ["full", "audit", "activity", "none"]
# --ledger: issue 14's comparison, the marker against the look-up build, at history full and audit
# (each option given on the command line wins).
LEDGER = {"only": "cw-default,cw-lookup,js,ceiling", "history_levels": "full,audit",
          "skip": "idle,overhead,cluster,pg-h2"}
# --structure: the structure refactor's price, its build against its parent's (the look-up build),
# same behaviour; three rounds in alternating order for the spread between runs of the same build.
STRUCTURE = {"only": "cw-lookup,cw-structure", "history_levels": "full",
             "skip": "idle,overhead,mismatch,cluster,pg-h2", "rounds": 3}
# --compare REV: this tree against a commit (a refactor's base), same phases and rounds as --structure.
COMPARE = {"only": "cw-base,cw-default", "history_levels": "full",
           "skip": "idle,overhead,mismatch,cluster,pg-h2", "rounds": 3}
# --ledger-parts: the price of each part of the ledger on the engine, the ceiling client writing it one
# part more at a time (issue 28), with camunda-worker at its defaults and the JS client beside them in the
# same run, at history full and audit, three rounds in alternating order.
LEDGER_PARTS_PRESET = {"only": ",".join(["ceiling"] + [f"ceiling-{p}" for p in LEDGER_PARTS] + ["cw-default", "js"]),
                       "history_levels": "full,audit", "skip": "idle,overhead,mismatch,cluster,pg-h2",
                       "rounds": 3, "paced_count": 0}
# --max-tasks-sweep: camunda-worker at its defaults (the adaptive limit) against fixed --max-tasks values (and
# the ceiling), draining a backlog, three rounds in alternating order.
MAX_TASKS_PRESET = {"only": ",".join(["cw-default", "cw-adaptive-256"] + [f"cw-fixed-{n}" for n in MAX_TASKS_SWEEP]
                                     + ["ceiling"]),
                    "history_levels": "full", "skip": "idle,overhead,mismatch,cluster,pg-h2", "rounds": 3,
                    "paced_count": 0}
# --neighbour: another client on the engine at a fixed rate, alone and beside camunda-worker draining a backlog
# (fixed 256 slots, the adaptive limit under 256, the defaults), three rounds in alternating order; none of the
# phases above.
NEIGHBOUR_PRESET = {"skip": ",".join(PHASES), "rounds": 3}

# The separate runs, each with a section of BENCHMARKS.md of its own: (its option, as an attribute of the
# parsed arguments; its preset; its results directory under bench/results; the section's writer; its markers).
SEPARATE_RUNS = [
    ("ledger", LEDGER, "ledger", ledger_section, LEDGER_MARKERS),
    ("structure", STRUCTURE, "structure", structure_section, STRUCTURE_MARKERS),
    ("compare", COMPARE, "compare", compare_section, COMPARE_MARKERS),
    ("ledger_parts", LEDGER_PARTS_PRESET, "ledger-parts", ledger_parts_section, LEDGER_PARTS_MARKERS),
    ("max_tasks_sweep", MAX_TASKS_PRESET, "max-tasks", max_tasks_section, MAX_TASKS_MARKERS),
    ("neighbour", NEIGHBOUR_PRESET, "neighbour", neighbour_section, NEIGHBOUR_MARKERS),
]


# Sizes of a quick and of a full run: (quick, full). An option given on the command line wins.
SIZES = {
    "warmup": (100, 500),
    "idle_seconds": (60, 300),
    "idle_settle": (20, 120),
    "mismatch_instances": (600, 4500),
    "mismatch_capacity": (512, None),  # full run: the worker's own default (4096)
    "mismatch_wait": (120, 300),
    "mismatch_settle": (5, 10),  # after fetching paused, before the window: the last first attempts go out
    "mismatch_hold": (10, 60),
    "cluster_instances": (200, 1000),
    "pickup_count": (50, 300),
    "sparse_count": (6, 20),
    "stall_seconds": (30, 60),
    "overhead_warmup": (2, 3),
    "overhead_seconds": (5, 15),
    "neighbour_secs": (10, 20),
    "neighbour_measure_after": (2, 4),
    "neighbour_backlog": (2000, 9000),
}


def cmd_version(argv):
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
        text = (out.stdout + out.stderr).strip().splitlines()
        return re.sub(r"\x1b\[[0-9;]*m", "", text[0]) if text else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_facts(paths, levels):
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    postgres = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    return {
        "cores": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": cmd_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "java": cmd_version(["java", "-version"]), "maven": cmd_version(["mvn", "-v"]),
        "python": platform.python_version(), "node": cmd_version(["node", "--version"]),
        "rust": cmd_version(["rustc", "--version"]),
        "camunda_worker": cmd_version([paths["cw"], "--version"]),
        "engine": f"Camunda 7.21.0 on Spring Boot 3.2 (engine/engine.sh), in-memory H2, history level "
                  f"{' and '.join(levels)}, JVM " + JAVA_OPTS,
        "postgres": short_version(cmd_version([postgres[-1], "--version"]) if postgres else None, "PostgreSQL"),
        "haproxy": short_version(cmd_version([haproxy, "-v"]) if haproxy else None, "HAProxy"),
    }


def short_version(text, name):
    """`name` and the first version number in `text` ("HAProxy version 2.6.12-1+deb12u4 ..." -> "HAProxy 2.6.12")."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text or "")
    return f"{name} {m.group(1)}" if m else text


def main():
    ap = argparse.ArgumentParser(prog="python -m camunda_bench", description=HELP_TEXT,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: every phase with small numbers (200 instances, short idle/overhead/mismatch, "
                         "cluster with 200 instances and 50 pickups)")
    ap.add_argument("--only", default=None, help=f"contenders, comma-separated (of {','.join(ALL + EXTRA)}; "
                                                 f"default {','.join(ALL)})")
    ap.add_argument("--skip", default=None, help=f"phases to skip, comma-separated (of {','.join(PHASES)})")
    ap.add_argument("--history-levels", default=None,
                    help=f"the throughput phase at each of these engine history levels, in turn (of "
                         f"{','.join(HISTORY_LEVELS)}; default full); the first is the one of the main tables")
    ap.add_argument("--ledger", action="store_true",
                    help=f"issue 14's comparison: --only {LEDGER['only']} --history-levels {LEDGER['history_levels']} "
                         f"--skip {LEDGER['skip']} (each unless given), results in bench/results/ledger/ "
                         f"(quick: bench/results/quick/ledger/); a full run rewrites the ledger section of "
                         f"BENCHMARKS.md")
    ap.add_argument("--structure", action="store_true",
                    help=f"the structure refactor's price: --only {STRUCTURE['only']} --history-levels "
                         f"{STRUCTURE['history_levels']} --skip {STRUCTURE['skip']} --rounds {STRUCTURE['rounds']} "
                         f"(each unless given), results in bench/results/structure/ (quick: "
                         f"bench/results/quick/structure/); a full run rewrites the structure section of BENCHMARKS.md")
    ap.add_argument("--compare", metavar="REV", default=None,
                    help=f"this tree (cw-default) against camunda-worker built from commit REV (cw-base): --only "
                         f"{COMPARE['only']} --history-levels {COMPARE['history_levels']} --skip {COMPARE['skip']} "
                         f"--rounds {COMPARE['rounds']} (each unless given), results in bench/results/compare/ "
                         f"(quick: bench/results/quick/compare/); a full run rewrites the compare section of "
                         f"BENCHMARKS.md")
    ap.add_argument("--ledger-parts", action="store_true",
                    help=f"the price of each part of the ledger: the ceiling client with --ledger none, marker, "
                         f"keys, flip, instance; --only {LEDGER_PARTS_PRESET['only']} --history-levels "
                         f"{LEDGER_PARTS_PRESET['history_levels']} --skip {LEDGER_PARTS_PRESET['skip']} --rounds "
                         f"{LEDGER_PARTS_PRESET['rounds']} --paced-count 0 (each unless given), results in "
                         f"bench/results/ledger-parts/ (quick: bench/results/quick/ledger-parts/); a full run "
                         f"rewrites the ledger-parts section of BENCHMARKS.md")
    ap.add_argument("--max-tasks-sweep", action="store_true",
                    help=f"camunda-worker's defaults against fixed --max-tasks values: --only {MAX_TASKS_PRESET['only']} "
                         f"--history-levels {MAX_TASKS_PRESET['history_levels']} --skip {MAX_TASKS_PRESET['skip']} "
                         f"--rounds {MAX_TASKS_PRESET['rounds']} --paced-count 0 (each unless given), results in "
                         f"bench/results/max-tasks/ (quick: bench/results/quick/max-tasks/); a full run rewrites the "
                         f"max-tasks section of BENCHMARKS.md")
    ap.add_argument("--neighbour", action="store_true",
                    help="another client on the engine (bench/ceiling's neighbour: its own process and topic at "
                         "--neighbour-rate instances/s) alone and beside camunda-worker draining a backlog at fixed "
                         "256 slots, with the adaptive limit under 256, and at its defaults; --rounds "
                         f"{NEIGHBOUR_PRESET['rounds']} and no other phase (unless given), results in "
                         "bench/results/neighbour/ (quick: bench/results/quick/neighbour/); a full run rewrites the "
                         "neighbour section of BENCHMARKS.md")
    ap.add_argument("--neighbour-rate", type=int, default=20, help="the neighbour's starts per second (default 20)")
    ap.add_argument("--neighbour-secs", type=int, default=None,
                    help="how long the neighbour starts instances (default 20, quick 10)")
    ap.add_argument("--neighbour-measure-after", type=int, default=None,
                    help="the neighbour's instances started from this second on are measured (default 4, quick 2)")
    ap.add_argument("--neighbour-backlog", type=int, default=None,
                    help="the backlog camunda-worker drains beside the neighbour (default 9000, quick 2000)")
    ap.add_argument("--new-rev", default=None, help="the commit this tree is (bench/run.sh passes it)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="the throughput phase's contenders this many times at each history level, in alternating "
                         "order (default 1); the first round's runs are the main tables'")
    ap.add_argument("--engine-port", type=int, default=18200)
    ap.add_argument("--fake-port", type=int, default=18201)
    ap.add_argument("--metrics-port", type=int, default=18202)
    ap.add_argument("--paced-rate", type=float, default=25.0)
    ap.add_argument("--paced-count", type=int, default=None, help="default 500")
    ap.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 300, quick 60)")
    ap.add_argument("--idle-settle", type=float, default=None, help="idle settling before the window (default 120, "
                                                                     "quick 20)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="instances run through each fresh engine (ceiling client, no delay) before measuring "
                         "(default 500, quick 100; 0 = none)")
    ap.add_argument("--backlog", type=int, default=None,
                    help="instances started while the contender is paused, then drained (default = --instances)")
    ap.add_argument("--mismatch-instances", type=int, default=None, help="default 4500, quick 600")
    ap.add_argument("--mismatch-settle", type=float, default=None,
                    help="seconds from fetching paused to the mismatch window (default 10, quick 5)")
    ap.add_argument("--mismatch-hold", type=float, default=None,
                    help="the mismatch window: requests/s to the engine, CPU (default 60, quick 10)")
    ap.add_argument("--mismatch-capacity", type=int, default=None,
                    help="--max-pending-follow-ups for the mismatch phase (default: the worker's default, 4096; "
                         "quick 512)")
    ap.add_argument("--cluster-contenders", default=",".join(CLUSTER_ALL),
                    help=f"cluster contenders, comma-separated (of {','.join(CLUSTER_ALL)})")
    ap.add_argument("--cluster-instances", type=int, default=None,
                    help="throughput instances per cluster contender and for PostgreSQL vs H2 (default 1000, quick 200)")
    ap.add_argument("--cluster-base-port", type=int, default=18300)
    ap.add_argument("--pickup-rate", type=float, default=10.0)
    ap.add_argument("--pickup-count", type=int, default=None, help="default 300, quick 50")
    ap.add_argument("--sparse-interval", type=float, default=3.0,
                    help="seconds between the starts of the sparse pickup run (cluster)")
    ap.add_argument("--sparse-count", type=int, default=None, help="instances of the sparse pickup run "
                                                                    "(default 20, quick 6; 0 = none)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results, quick: bench/results/quick)")
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="only regenerate summary.md, chart.png, cluster.png (beside the JSON) and, for a full run, "
                         "the results section of BENCHMARKS.md")
    ap.add_argument("--cw-bin")
    ap.add_argument("--jaeger-bin", help="Jaeger v2 (scripts/jaeger.sh; contender cw-traced)")
    ap.add_argument("--cw-lookup-bin", help="camunda-worker built from the look-up commit (contender cw-lookup)")
    ap.add_argument("--cw-structure-bin", help="camunda-worker built from the structure commit (contender "
                                               "cw-structure)")
    ap.add_argument("--cw-base-bin", help="camunda-worker built from the --compare commit (contender cw-base)")
    ap.add_argument("--ceiling-bin")
    ap.add_argument("--fake-bin")
    ap.add_argument("--java-jar")
    args = ap.parse_args()
    if args.report_only:
        with open(args.report_only) as f:
            res = json.load(f)
        out_dir = os.path.dirname(os.path.abspath(args.report_only))
        summary = write_reports(res, out_dir)
        if not res.get("quick") and out_dir == os.path.join(BENCH, "results"):
            update_benchmarks_md(summary)
        for _, _, subdir, section, markers in SEPARATE_RUNS:
            if not res.get("quick") and out_dir == os.path.join(BENCH, "results", subdir):
                update_benchmarks_md(section(res), markers)
        print(summary)
        return
    missing = [f"--{a.replace('_', '-')}" for a in ("cw_bin", "ceiling_bin", "fake_bin", "java_jar")
               if not getattr(args, a)]
    if missing:
        ap.error(f"{', '.join(missing)} required (bench/run.sh passes them)")
    q = args.quick
    chosen = [run for run in SEPARATE_RUNS if getattr(args, run[0])]
    if len(chosen) > 1:
        ap.error(", ".join(f"--{run[0].replace('_', '-')}" for run in SEPARATE_RUNS) + ": separate runs, one at a time")
    separate = chosen[0] if chosen else None
    preset = separate[1] if separate else {}
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.rounds = args.rounds or 1
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    args.only = args.only if args.only is not None else ",".join(ALL)
    args.skip = args.skip or ""
    levels = [v.strip() for v in (args.history_levels or "full").split(",") if v.strip()]
    unknown = [v for v in levels if v not in HISTORY_LEVELS]
    if unknown or not levels or len(set(levels)) != len(levels):
        ap.error(f"--history-levels: {args.history_levels!r} (distinct values of {','.join(HISTORY_LEVELS)})")
    if q and args.instances == 2000:
        args.instances = 200
    if args.paced_count is None:
        args.paced_count = 500
    if q:
        args.paced_count = min(args.paced_count, 100)
    if args.backlog is None:
        args.backlog = args.instances
    # (quick, full) values of the options left unset, and of the settings that have no option.
    for name, (quick, full) in SIZES.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick if q else full)
    # A single-URL client on the cluster may legitimately see nothing for 30 s (a parked poll re-checks
    # the database every 30 s): never give up on a cluster phase before that.
    args.cluster_stall = 75
    args.phase_timeout = 120 + args.instances * 0.5
    out_dir = args.out or os.path.join(BENCH, "results", "quick" if q else "", separate[2] if separate else "")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    workdir = os.path.join(BENCH, ".work")
    os.makedirs(workdir, exist_ok=True)
    paths = {"cw": os.path.abspath(args.cw_bin), "ceiling": os.path.abspath(args.ceiling_bin),
             "fake": os.path.abspath(args.fake_bin),
             "neighbour": os.path.join(os.path.dirname(os.path.abspath(args.ceiling_bin)), "neighbour"), "java_jar": os.path.abspath(args.java_jar),
             "python": os.path.join(BENCH, ".venv", "bin", "python"),
             "cw_lookup": os.path.abspath(args.cw_lookup_bin) if args.cw_lookup_bin else None,
             "cw_structure": os.path.abspath(args.cw_structure_bin) if args.cw_structure_bin else None,
             "cw_base": os.path.abspath(args.cw_base_bin) if args.cw_base_bin else None,
             "base_rev": args.compare,
             "jaeger": os.path.abspath(args.jaeger_bin) if args.jaeger_bin else None}
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL + EXTRA]
    if unknown:
        ap.error(f"unknown contenders {unknown} (of {','.join(ALL + EXTRA)})")
    if "cw-traced" in keys and not (paths["jaeger"] and os.access(paths["jaeger"], os.X_OK)):
        ap.error("cw-traced needs --jaeger-bin, an executable (bench/run.sh builds and passes it)")
    if "cw-lookup" in keys and not (paths["cw_lookup"] and os.access(paths["cw_lookup"], os.X_OK)):
        ap.error("cw-lookup needs --cw-lookup-bin, an executable (bench/run.sh builds and passes it)")
    if "cw-structure" in keys and not (paths["cw_structure"] and os.access(paths["cw_structure"], os.X_OK)):
        ap.error("cw-structure needs --cw-structure-bin, an executable (bench/run.sh builds and passes it)")
    if "cw-base" in keys and not (args.compare and paths["cw_base"] and os.access(paths["cw_base"], os.X_OK)):
        ap.error("cw-base needs --compare REV and --cw-base-bin, an executable (bench/run.sh builds and passes it)")
    cluster_keys = [k.strip() for k in args.cluster_contenders.split(",") if k.strip()]
    unknown = [k for k in cluster_keys if k not in CLUSTER_ALL]
    if unknown:
        ap.error(f"unknown cluster contenders {unknown} (of {','.join(CLUSTER_ALL)})")
    cluster_keys = [k for k in CLUSTER_ALL if k in cluster_keys]  # the ceiling last
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)} (of {','.join(PHASES)})")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    engine = Engine(args.engine_port, workdir)
    t_begin = time.time()
    res = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "instances": args.instances, "quick": q,
           "backlog": args.backlog, "warmup": args.warmup,
           "paced_rate": args.paced_rate, "paced_count": args.paced_count, "loadavg_start": loadavg(),
           "machine": machine_facts(paths, levels), "history_levels": levels, "rounds": args.rounds, "runs": {}, "idle": None, "overhead": None, "mismatch": None,
           "cluster": None, "skipped": sorted(skip), "phase_windows": {},
           "command": os.environ.get("BENCH_COMMAND", " ".join(["python -m camunda_bench"] + sys.argv[1:])),
           "base_rev": args.compare, "new_rev": args.new_rev}

    def phase(name, fn):
        t0, lb = time.time(), loadavg()
        try:
            return fn()
        finally:
            res["phase_windows"][name] = {"window": [t0, time.time()], "seconds": round(time.time() - t0, 1),
                                          "loadavg_before": lb, "loadavg_after": loadavg()}

    def failed(name, e):
        log(f"{name} failed: {e}")
        return {"error": str(e)}

    try:
        if "throughput" not in skip:
            # One level: engine.sh's own (full), runs in res["runs"] as always. Several: each
            # contender at each level on its fresh engine; the first level's runs in res["runs"] (the
            # main tables), the others' in res["runs_at_other_history_levels"][level]. Rounds after
            # the first (--rounds), in reversed order every other round: res["runs_more_rounds"][level].
            def throughput():
                limit = int(args.phase_timeout * 2 + 300)
                several = len(levels) > 1
                for i, level in enumerate(levels):
                    if several:
                        log(f"=== history level {level}")
                    for rnd in range(args.rounds):
                        if rnd == 0:
                            runs = res["runs"] if i == 0 else res.setdefault(
                                "runs_at_other_history_levels", {}).setdefault(level, {})
                        else:
                            runs = {}
                            res.setdefault("runs_more_rounds", {}).setdefault(level, []).append(runs)
                        if args.rounds > 1:
                            log(f"=== round {rnd + 1}/{args.rounds}")
                        for key in (keys if rnd % 2 == 0 else keys[::-1]):
                            spec = contenders(paths, engine.url, engine.port, args.metrics_port, limit)[key]
                            tag = "-".join([key] + ([level] if several else [])
                                           + ([f"r{rnd + 1}"] if args.rounds > 1 else []))
                            try:
                                runs[key] = run_contender(key, spec, engine, paths, args, workdir,
                                                          tag=tag if tag != key else None,
                                                          history_level=level if several or level != "full" else None)
                            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                                log(f"{key} failed: {e}")
                                runs[key] = {"key": key, "label": spec["label"], "error": str(e), "throughput": {},
                                             "history_level": level}
            phase("throughput", throughput)
        if "idle" not in skip:
            idle_keys = [k for k in ["cw-default", "py-default", "js", "java"] if k in keys] or ["cw-default"]
            try:
                res["idle"] = phase("idle", lambda: run_idle(engine, paths, args, workdir, idle_keys))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                res["idle_error"] = failed("idle", e)["error"]
        if "overhead" not in skip:
            try:
                res["overhead"] = phase("overhead", lambda: run_overhead(paths, args, workdir))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                res["overhead_error"] = failed("overhead", e)["error"]
        if "mismatch" not in skip:
            try:
                res["mismatch"] = phase("mismatch", lambda: run_mismatch(engine, paths, args, workdir))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                res["mismatch"] = dict(failed("mismatch", e), instances=args.mismatch_instances,
                                       capacity=args.mismatch_capacity or 4096,
                                       capacity_is_default=args.mismatch_capacity is None)
        if "cluster" not in skip:
            res["cluster"] = phase("cluster", lambda: run_cluster(paths, args, workdir, cluster_keys))
        if "pg-h2" not in skip:
            res["cluster"] = res["cluster"] or {}
            res["cluster"]["pg_vs_h2"] = phase("pg-h2", lambda: run_pg_vs_h2(engine, paths, args, workdir))
        if args.neighbour:
            res["neighbour"] = phase("neighbour", lambda: run_neighbour(engine, paths, args, workdir))
    finally:
        cleanup()
        engine.stop()
    res["total_seconds"] = round(time.time() - t_begin, 1)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    summary = write_reports(res, out_dir)
    full = (not q and args.out is None and not separate and set(keys) == set(ALL)
            and set(cluster_keys) == set(CLUSTER_ALL) and not skip and levels == ["full"])
    if full and update_benchmarks_md(summary):
        log("BENCHMARKS.md results section updated")
    if separate and not q and args.out is None and update_benchmarks_md(separate[3](res), separate[4]):
        log(f"BENCHMARKS.md {separate[2]} section updated")
    print(summary)
    log(f"done in {res['total_seconds']:.0f} s; results in {os.path.relpath(out_dir, REPO)}/")
