"""The trace receiver of the contender cw-traced: Jaeger v2 (built by scripts/jaeger.sh, passed as
--jaeger-bin), in-memory, on loopback ports of its own, started before the worker and stopped after
it, so that the worker's spans go to a real collector while it is measured."""

import os
import time
import urllib.request

from .common import spawn, stop_process

OTLP_PORT = 18711
QUERY_PORT = 18712
GRPC_PORT = 18713

CONFIG = f"""service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{QUERY_PORT}
    grpc:
      endpoint: 127.0.0.1:{GRPC_PORT}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{OTLP_PORT}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""

OTLP_ENDPOINT = f"http://127.0.0.1:{OTLP_PORT}"


def start_jaeger(binary, workdir, tag):
    """Starts Jaeger and waits until its query API answers; returns the process."""
    config = os.path.join(workdir, f"{tag}-jaeger.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
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
