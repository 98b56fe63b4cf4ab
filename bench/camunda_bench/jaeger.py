"""The trace receiver of the contender cw-traced: Jaeger v2 (built by scripts/jaeger.sh, passed as
--jaeger-bin), in-memory, on loopback ports of its own, started before the worker and stopped after
it, so that the worker's spans go to a real collector while it is measured."""

import os
import time
import urllib.request

from .common import REPO, spawn, stop_process

OTLP_PORT = 18711
QUERY_PORT = 18712
GRPC_PORT = 18713

# The configuration the tests use too, with this run's ports.
CONFIG_TEMPLATE = os.path.join(REPO, "scripts", "tools", "jaeger", "config.yaml")

OTLP_ENDPOINT = f"http://127.0.0.1:{OTLP_PORT}"


def start_jaeger(binary, workdir, tag):
    """Starts Jaeger and waits until its query API answers; returns the process."""
    config = os.path.join(workdir, f"{tag}-jaeger.yaml")
    with open(CONFIG_TEMPLATE) as f:
        text = f.read().format(otlp=OTLP_PORT, query=QUERY_PORT, grpc=GRPC_PORT)
    with open(config, "w") as f:
        f.write(text)
    proc = spawn([binary, "--config", config], os.path.join(workdir, f"{tag}-jaeger.log"))
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jaeger exited with {proc.returncode} (see {tag}-jaeger.log)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{QUERY_PORT}/api/services", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("jaeger's query API did not answer within 60 s")
