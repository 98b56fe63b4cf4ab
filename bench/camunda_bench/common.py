"""Shared by every module of the driver: where things are, the constants of the benchmark process,
the log line, and the processes the driver starts (so that all of them can be stopped on the way out).

Kept apart so that the other modules depend on this one and not on each other for these."""

import contextlib
import os
import signal
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
ENGINE_SH = os.path.join(REPO, "engine", "engine.sh")


DRIVER_UA = "bench-driver"
PROCESS_KEY = "message_correlation"
DELAY_S = 2.0
# Same JVM options for the single H2 engine and for the cluster's nodes (engine.sh's cluster default
# is C1 only, which is for tests, not for benchmarks).
JAVA_OPTS = os.environ.get("ENGINE_JAVA_OPTS") or "-Xms256m -Xmx1g -XX:+UseParallelGC"
# Business-key prefixes of instances that are not part of a measured bulk: the paced latency run,
# the cluster's pickup run, and the instances that flush parked long polls between contenders.
SPECIAL_PREFIXES = ("paced-", "pickup-", "flush-")
# The startup window of camunda-worker in the idle phase.
STARTUP_WINDOW_S = 120.0

STARTED = []  # (pid, Popen) of everything this driver started, for cleanup


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spawn(argv, logfile, env=None):
    with open(logfile, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=BENCH)
    STARTED.append(proc)
    return proc


def stop_process(proc, grace=10.0):
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc in STARTED:
        STARTED.remove(proc)


def cleanup():
    for proc in STARTED.copy():  # a copy: stop_process removes from STARTED
        with contextlib.suppress(Exception):  # best effort on the way out
            stop_process(proc, grace=5)
