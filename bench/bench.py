#!/usr/bin/env python3
"""camunda-worker benchmark driver (run it through bench/run.sh, which installs what it needs).

Phases (names for --skip), in this order:

  throughput  per contender, each on a freshly started bundled engine (engine/engine.sh, in-memory
              H2, same JVM settings every time): start the contender, wait until it long-polls the
              engine, start N instances with `camunda-worker start --count N --concurrency 16` while
              it runs, wait until the engine's history shows all N COMPLETED; then a paced run (R
              instances/s, M instances) on the same engine for the unsaturated latency; then a
              backlog drain (the contender paused while B instances are started); stop, restart.
  idle        all real workers at once on one engine, no work: settle, then a window (full run
              120 s + 300 s, quick 20 s + 60 s): requests per endpoint, CPU, RSS; camunda-worker's
              first 2 minutes after its start ("start-up") counted separately.
  overhead    camunda-worker against bench/ceiling's fake engine (canned replies, no JVM),
              --correlation-delay 0s: tasks/s, CPU microseconds per task.
  mismatch    camunda-worker (defaults) on a fresh engine with a backlog larger than its pending
              follow-up capacity and every follow-up undeliverable (--message-name no_such_message
              --correlation-timeout 1h): RSS once fetching has paused.
  cluster     `engine.sh cluster start --nodes 2` (PostgreSQL, two nodes, HAProxy round robin),
              one contender at a time on the same cluster: pickup latency (task created -> task
              completed, from the engine's external-task log) for instances started on a random
              node at a paced rate (10/s) and sparsely (one every 3 s), then throughput (N started
              through the LB); camunda-worker with both node URLs and with the LB URL, the other
              clients and the ceiling client through the LB. Between contenders: leftovers deleted,
              long polls left parked by the previous one flushed (see quiesce).
  pg-h2       (part of the cluster section) camunda-worker (defaults) on one node on PostgreSQL
              against one node on H2: throughput of N instances started while it runs.

Requests are counted from the engines' Tomcat access logs (enabled the same way for every
contender); the contender is told apart from the starter and this driver by path and User-Agent.
"""

import argparse
import datetime as dt
import glob
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
ENGINE_SH = os.path.join(REPO, "engine", "engine.sh")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
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


# ---------------------------------------------------------------- processes and /proc


def spawn(argv, logfile, env=None):
    out = open(logfile, "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=BENCH)
    out.close()
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
    for proc in list(STARTED):
        try:
            stop_process(proc, grace=5)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def process_tree(pid):
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children_of(p))
    return tree


def cpu_seconds(pid):
    """utime+stime of the process (all its threads), of its reaped children, and of live descendants."""
    total = 0.0
    for i, p in enumerate(process_tree(pid)):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        total += ticks / CLK_TCK
    return total


def thread_cpu_ns(pid):
    """On-CPU nanoseconds of the live threads of the process tree (/proc/<pid>/task/*/schedstat).

    Finer than the 10 ms ticks of /proc/<pid>/stat, but blind to threads that have exited: used
    for the idle phase, where the threads stay the same."""
    total = 0
    for p in process_tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def status_kib(pid, key):
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def socket_inodes(pid):
    inodes = set()
    for p in process_tree(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    target = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    return inodes


def connections_to(pid, port):
    """Established TCP connections of the process tree to 127.0.0.1:port (IPv4 or v4-mapped IPv6)."""
    inodes = socket_inodes(pid)
    want = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[2].endswith(want) and parts[3] == "01" and parts[9] in inodes:
                        count += 1
        except OSError:
            pass
    return count


def wait_polling(proc, port, timeout, name):
    """Ready = the contender holds an open connection to the engine (its first long poll)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it polled the engine")
        if connections_to(proc.pid, port) > 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not connect to the engine within {timeout} s")


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ---------------------------------------------------------------- HTTP


def http_json(url, method="GET", body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"User-Agent": DRIVER_UA, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def engine_date(text):
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def finished_count(url):
    return http_json(f"{url}/history/process-instance/count?processDefinitionKey={PROCESS_KEY}&finished=true")["count"]


def history(url, query=""):
    """Historic process instances of the benchmark process (`query`: more URL parameters, `&a=b`)."""
    out, first = [], 0
    while True:
        page = http_json(f"{url}/history/process-instance?processDefinitionKey={PROCESS_KEY}{query}"
                         f"&firstResult={first}&maxResults=500", timeout=60)
        out.extend(page)
        if len(page) < 500:
            return out
        first += 500


def is_special(instance):
    return (instance.get("businessKey") or "").startswith(SPECIAL_PREFIXES)


def metrics_text(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def metric_sum(text, name):
    """Sum of one metric's samples over all its label sets; None when absent."""
    total, seen = 0.0, False
    pattern = re.compile(re.escape(name) + r"(\{[^}]*\})?\s+(\S+)$")
    for line in (text or "").splitlines():
        m = pattern.match(line)
        if m:
            total += float(m.group(2))
            seen = True
    return total if seen else None


def scrape_metrics(port):
    """camunda-worker's request counts by endpoint (summed over engine nodes) from its Prometheus text."""
    text = metrics_text(port)
    if text is None:
        return None
    counts = {}
    for line in text.splitlines():
        if not line.startswith("camunda_worker_engine_request_duration_seconds_count{"):
            continue
        m = re.search(r'endpoint="([^"]+)"', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + float(line.rsplit(None, 1)[1])
    return counts


def diff_counts(after, before):
    if after is None or before is None:
        return None
    keys = set(after) | set(before)
    return {k: int(after.get(k, 0) - before.get(k, 0)) for k in sorted(keys) if after.get(k, 0) - before.get(k, 0)}


# ---------------------------------------------------------------- access logs


ACCESS_LOG_PATTERN = "%{end:msec}t|%m|%U|%s|%D|%{User-Agent}i"


def access_log_args(logdir, prefix):
    return [
        "--logging.level.root=WARN",
        "--server.tomcat.accesslog.enabled=true",
        f"--server.tomcat.accesslog.directory={logdir}",
        f"--server.tomcat.accesslog.prefix={prefix}",
        "--server.tomcat.accesslog.suffix=.log",
        "--server.tomcat.accesslog.rotate=false",
        f"--server.tomcat.accesslog.pattern={ACCESS_LOG_PATTERN}",
    ]


def access_lines(files):
    for path in files:
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("|", 5)
                if len(parts) < 6:
                    continue
                try:
                    end = int(parts[0]) / 1000.0
                except ValueError:
                    continue
                yield end, parts


def count_requests(files, t0, t1, who=None, ua=None):
    """Access-log lines ending in [t0, t1] (epoch s) made by `who` (contender|starter|driver|all),
    or by User-Agent prefix `ua`: (counts, micros) by endpoint; None when there is no log."""
    if not files or not any(os.path.exists(p) for p in files):
        return None
    counts, micros = {}, {}
    for end, (_, method, path, _status, took, agent) in access_lines(files):
        if not (t0 <= end <= t1):
            continue
        if ua is not None and not agent.startswith(ua):
            continue
        if who is not None and who != "all" and classify(path, agent) != who:
            continue
        ep = endpoint_of(method, path)
        counts[ep] = counts.get(ep, 0) + 1
        micros.setdefault(ep, []).append(int(took) if took.isdigit() else 0)
    return counts, micros


def classify(path, agent):
    if agent.startswith(DRIVER_UA) or agent.startswith("curl"):
        return "driver"
    if agent in ("-", "") and path.endswith("/engine-rest/engine"):
        return "lb-check"  # HAProxy's health check of each cluster node (every second)
    if re.search(r"/process-definition/key/[^/]+/start$", path) or path.endswith("/deployment/create"):
        return "starter"
    return "contender"


def endpoint_of(method, path):
    p = path.split("/engine-rest", 1)[-1]
    if p == "/external-task/fetchAndLock":
        return "fetchAndLock"
    m = re.match(r"/external-task/[^/]+/(\w+)$", p)
    if m:
        return m.group(1)
    if p == "/external-task" or p == "/external-task/count":
        return "externalTaskQuery"
    if p == "/message":
        return "message"
    if p == "/engine":
        return "engine"
    if p.startswith("/event-subscription"):
        return "eventSubscription"
    if p.startswith("/process-instance"):
        return "processInstance"
    if p.startswith("/history/"):
        return "history"
    # Ids out of anything else, so that counts do not split per instance.
    return f"{method} " + re.sub(r"/[0-9a-fA-F-]{16,}", "/{id}", p)


# ---------------------------------------------------------------- engines


class Engine:
    """The bundled engine (one node, in-memory H2) on a dedicated port, with an access log per start."""

    kind = "h2"

    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}/engine-rest"
        self.pid = None
        self.access_logs = []

    def env(self):
        # The engine exits by itself (within ~1 s) if this driver dies without stopping it.
        return {**os.environ, "ENGINE_PORT": str(self.port), "ENGINE_JAVA_OPTS": JAVA_OPTS,
                "ENGINE_PARENT_PID": str(os.getpid())}

    def start(self, label):
        self.stop()
        logdir = os.path.join(self.workdir, "access")
        os.makedirs(logdir, exist_ok=True)
        path = os.path.join(logdir, f"access-{label}.log")
        if os.path.exists(path):
            os.remove(path)
        self.access_logs = [path]
        started = time.time()
        out = subprocess.run([ENGINE_SH, "start", *access_log_args(logdir, f"access-{label}")], env=self.env(),
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"engine.sh start failed:\n{out.stderr[-3000:]}")
        with open(os.path.join(REPO, "engine", ".run", f"engine-{self.port}.pid")) as f:
            self.pid = int(f.read().strip())
        log(f"engine up on :{self.port} (pid {self.pid}) in {time.time() - started:.0f} s")

    def stop(self):
        subprocess.run([ENGINE_SH, "stop"], env=self.env(), capture_output=True, text=True, timeout=120)
        self.pid = None

    def cpu(self):
        """CPU seconds so far by part: the engine JVM (H2 runs inside it)."""
        return dict(jvm=cpu_seconds(self.pid) if self.pid else 0.0)

    def requests(self, t0, t1, who):
        return count_requests(self.access_logs, t0, t1, who)


class Cluster:
    """`engine.sh cluster` on a base port: PostgreSQL, `nodes` engine nodes, HAProxy round robin.

    Contenders, the starter and this driver talk to `url`: the load balancer, or with one node the
    node itself. Each node writes its own access log (Spring resolves `${server.port}` in the prefix)."""

    kind = "postgres"

    def __init__(self, base_port, nodes, workdir):
        self.base_port = base_port
        self.nodes = nodes
        self.workdir = workdir
        self.lb_url = f"http://127.0.0.1:{base_port}/engine-rest"
        self.node_ports = [base_port + i for i in range(1, nodes + 1)]
        self.node_urls = [f"http://127.0.0.1:{p}/engine-rest" for p in self.node_ports]
        self.url = self.lb_url if nodes > 1 else self.node_urls[0]
        self.port = base_port if nodes > 1 else self.node_ports[0]
        self.run_dir = os.path.join(REPO, "engine", ".run", f"cluster-{base_port}")
        self.node_pids, self.pg_pid, self.lb_pid = [], None, None
        self.access_logs = []
        self.started_s = None

    def env(self):
        return {**os.environ, "ENGINE_JAVA_OPTS": JAVA_OPTS, "ENGINE_PARENT_PID": str(os.getpid())}

    def _pid(self, name):
        try:
            with open(os.path.join(self.run_dir, name)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, label):
        self.stop()
        logdir = os.path.join(self.workdir, "access")
        os.makedirs(logdir, exist_ok=True)
        self.access_logs = [os.path.join(logdir, f"access-{label}-{p}.log") for p in self.node_ports]
        for path in self.access_logs:
            if os.path.exists(path):
                os.remove(path)
        started = time.time()
        out = subprocess.run([ENGINE_SH, "cluster", "start", "--nodes", str(self.nodes), "--base-port",
                              str(self.base_port), "--",
                              *access_log_args(logdir, f"access-{label}-${{server.port}}")],
                             env=self.env(), capture_output=True, text=True, timeout=1200)
        if out.returncode != 0:
            raise RuntimeError(f"engine.sh cluster start failed:\n{out.stderr[-3000:]}")
        urls = out.stdout.split()
        if urls[:1] != [self.lb_url] or urls[1:] != self.node_urls:
            raise RuntimeError(f"engine.sh cluster start printed {urls}, expected {[self.lb_url] + self.node_urls}")
        self.node_pids = [self._pid(f"node-{i}.pid") for i in range(1, self.nodes + 1)]
        self.pg_pid, self.lb_pid = self._pid("postgres.pid"), self._pid("haproxy.pid")
        self.started_s = round(time.time() - started, 1)
        log(f"cluster up: {self.nodes} node(s) {self.node_ports} (pids {self.node_pids}), PostgreSQL pid {self.pg_pid}, "
            f"HAProxy :{self.base_port} (pid {self.lb_pid}) in {self.started_s:.0f} s")

    def stop(self):
        subprocess.run([ENGINE_SH, "cluster", "stop", "--base-port", str(self.base_port)], env=self.env(),
                       capture_output=True, text=True, timeout=180)
        self.node_pids, self.pg_pid, self.lb_pid = [], None, None

    def cpu(self):
        """CPU seconds so far by part: engine JVMs, PostgreSQL (postmaster and its backends), HAProxy."""
        return dict(jvm=sum(cpu_seconds(p) for p in self.node_pids if p),
                    postgres=cpu_seconds(self.pg_pid) if self.pg_pid else 0.0,
                    haproxy=cpu_seconds(self.lb_pid) if self.lb_pid else 0.0)

    def requests(self, t0, t1, who):
        return count_requests(self.access_logs, t0, t1, who)


def deploy(paths, url):
    dep = subprocess.run([paths["cw"], "deploy", "--engine-url", url, "--metrics-addr", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=120)
    if dep.returncode != 0:
        raise RuntimeError(f"deploy failed: {dep.stderr[-2000:]}")


# ---------------------------------------------------------------- contenders


def contenders(paths, url, engine_port, metrics_port, limit_secs):
    cw = paths["cw"]
    py = [paths["python"], os.path.join(BENCH, "python", "worker.py"), url]
    js = ["node", os.path.join(BENCH, "js", "worker.mjs"), url]
    java = ["java", "-jar", paths["java_jar"], url]
    m = f"127.0.0.1:{metrics_port}"
    return {
        "cw-default": dict(label="camunda-worker (defaults: --max-tasks 64)",
                           argv=[cw, "--engine-url", url, "--metrics-addr", m], metrics=metrics_port,
                           ua="camunda-worker/"),
        "cw-10": dict(label="camunda-worker --max-tasks 10 (the former default)",
                      argv=[cw, "--engine-url", url, "--metrics-addr", m, "--max-tasks", "10"],
                      metrics=metrics_port, ua="camunda-worker/"),
        "py-default": dict(label="Python client 4.5.0 (defaults: maxTasks 1)", argv=py, ua="python-requests/"),
        "py-tuned": dict(label="Python client 4.5.0 (maxTasks 64)", argv=py + ["--max-tasks", "64"],
                         ua="python-requests/"),
        "js": dict(label="JS client 3.1.0 (maxTasks 64, maxParallelExecutions 64)",
                   argv=js + ["64", "64", "30000", "2000"], ua="got"),
        "java": dict(label="Java client 7.21.0 (maxTasks 64)", argv=java + ["64", "30000", "2000"],
                     ua="Apache-HttpClient"),
        "ceiling": dict(label="ceiling (engine alone, minimal Rust client)",
                        argv=[paths["ceiling"], "--engine-url", url, "--fetchers", "2", "--max-tasks", "200",
                              "--delay-ms", "2000", "--limit-secs", str(limit_secs)], ua="bench-ceiling"),
    }


def cluster_contenders(paths, cluster, metrics_port, limit_secs):
    """The cluster's contenders: camunda-worker with every node's URL or with the LB's; the other
    clients (same settings as on one node, maxTasks 64 where they have it) and the ceiling through the LB."""
    lb = contenders(paths, cluster.lb_url, cluster.base_port, metrics_port, limit_secs)
    cw = paths["cw"]
    m = f"127.0.0.1:{metrics_port}"
    return {
        "cw-nodes": dict(label="camunda-worker (defaults), both node URLs: one long poll per node",
                         argv=[cw, "--engine-url", ",".join(cluster.node_urls), "--metrics-addr", m],
                         metrics=metrics_port, ua="camunda-worker/", ready_ports=cluster.node_ports),
        "cw-lb": dict(label="camunda-worker (defaults), LB URL only",
                      argv=[cw, "--engine-url", cluster.lb_url, "--metrics-addr", m],
                      metrics=metrics_port, ua="camunda-worker/"),
        "py": dict(lb["py-tuned"], label="Python client 4.5.0 (maxTasks 64), LB URL"),
        "js": dict(lb["js"], label="JS client 3.1.0 (maxTasks 64, maxParallelExecutions 64), LB URL"),
        "java": dict(lb["java"], label="Java client 7.21.0 (maxTasks 64), LB URL"),
        "ceiling": dict(lb["ceiling"], label="ceiling (minimal Rust client, 2 fetchers), LB URL"),
    }


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def distribution(values_ms):
    return dict(p50=round(percentile(values_ms, 0.5), 1), p90=round(percentile(values_ms, 0.9), 1),
                p99=round(percentile(values_ms, 0.99), 1), max=round(max(values_ms), 1),
                min=round(min(values_ms), 1))


def instance_stats(instances):
    done = [i for i in instances if i.get("endTime") and i.get("state") == "COMPLETED"]
    if not done:
        return dict(completed=0)
    starts = [engine_date(i["startTime"]) for i in done]
    ends = [engine_date(i["endTime"]) for i in done]
    lat_ms = [((e - s).total_seconds() - DELAY_S) * 1000 for s, e in zip(starts, ends)]
    wall = (max(ends) - min(starts)).total_seconds()
    return dict(
        completed=len(done),
        wall_s=round(wall, 3),
        instances_per_s=round(len(done) / wall, 2) if wall > 0 else None,
        latency_ms=distribution(lat_ms),
    )


def pickup_stats(url, prefix):
    """Per instance whose business key starts with `prefix`: its external task's successLog
    timestamp minus its creationLog timestamp, from the engine's history (both written by engine
    nodes on this machine's clock). That is the pickup plus one complete call."""
    instances = history(url, f"&processInstanceBusinessKeyLike={urllib.parse.quote(prefix)}%25")
    values, missing = [], 0
    for inst in instances:
        logs = http_json(f"{url}/history/external-task-log?processInstanceId={inst['id']}")
        created = [engine_date(e["timestamp"]) for e in logs if e.get("creationLog")]
        done = [engine_date(e["timestamp"]) for e in logs if e.get("successLog")]
        if created and done:
            values.append((min(done) - min(created)).total_seconds() * 1000)
        else:
            missing += 1
    out = dict(instances=len(instances), measured=len(values), missing=missing)
    if values:
        out["pickup_ms"] = distribution(values)
        out["pickup_ms"]["mean"] = round(sum(values) / len(values), 1)
        out["over_1s"] = sum(1 for v in values if v > 1000)
        out["over_10s"] = sum(1 for v in values if v > 10000)
    return out


class Paced(threading.Thread):
    """Starts `count` instances at `rate`/s from one thread, one keep-alive connection per port.

    With several ports (the cluster's nodes), each start goes to a port picked at random from a
    generator seeded with `seed`: every contender gets the same sequence of nodes."""

    def __init__(self, ports, count, rate, prefix="paced-", seed=0):
        super().__init__(daemon=True)
        self.ports = ports if isinstance(ports, list) else [ports]
        self.count, self.rate, self.prefix = count, rate, prefix
        self.rng = random.Random(seed)
        self.errors = 0
        self.behind_max_s = 0.0
        self.per_port = {p: 0 for p in self.ports}

    def run(self):
        conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in self.ports}
        t0 = time.time()
        for i in range(self.count):
            port = self.rng.choice(self.ports) if len(self.ports) > 1 else self.ports[0]
            due = t0 + i / self.rate
            now = time.time()
            if due > now:
                time.sleep(due - now)
            else:
                self.behind_max_s = max(self.behind_max_s, now - due)
            body = json.dumps({"businessKey": f"{self.prefix}{uuid.uuid4()}"})
            try:
                conns[port].request("POST", f"/engine-rest/process-definition/key/{PROCESS_KEY}/start", body,
                                    {"Content-Type": "application/json", "User-Agent": DRIVER_UA})
                resp = conns[port].getresponse()
                resp.read()
                if resp.status == 200:
                    self.per_port[port] += 1
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conns[port].close()
                conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for conn in conns.values():
            conn.close()


def wait_finished(url, target, timeout, proc=None, stall=60):
    """Polls the finished count until `target`; gives up after `timeout` s, or `stall` s without progress."""
    deadline = time.time() + timeout
    count, last, last_change = 0, -1, time.time()
    while time.time() < deadline:
        count = finished_count(url)
        if count >= target:
            return count, True
        if count != last:
            last, last_change = count, time.time()
        elif time.time() - last_change > stall:
            log(f"no instance finished for {stall} s ({count}/{target}): giving up on this phase")
            return count, False
        if proc is not None and proc.poll() is not None:
            log(f"contender exited with {proc.returncode} while {count}/{target} were finished")
            return count, False
        time.sleep(0.5)
    return count, False


def start_instances(paths, url, count, timeout):
    started = subprocess.run([paths["cw"], "start", "--engine-url", url, "--count", str(count), "--concurrency", "16",
                              "--metrics-addr", "127.0.0.1:0"], capture_output=True, text=True, timeout=timeout)
    if started.returncode != 0:
        raise RuntimeError(f"starter failed: {started.stderr[-2000:]}")


class Probe:
    """CPU, worker metrics and time at a point, for windows over one contender run."""

    def __init__(self, proc, engine, spec, metrics=None):
        self.cpu = cpu_seconds(proc.pid)
        self.engine_parts = engine.cpu()
        if metrics is None and spec.get("metrics"):
            metrics = scrape_metrics(spec["metrics"])
        self.metrics = metrics
        self.peak_rss_kib = status_kib(proc.pid, "VmHWM")
        self.time = time.time()

    def window(self, later):
        parts = {k: round(later.engine_parts.get(k, 0.0) - v, 3) for k, v in self.engine_parts.items()}
        out = dict(contender_cpu_s=round(later.cpu - self.cpu, 3),
                   # the engine with its database: the JVM(s), plus PostgreSQL on the cluster
                   engine_cpu_s=round(parts.get("jvm", 0.0) + parts.get("postgres", 0.0), 3),
                   worker_metrics_requests=diff_counts(later.metrics, self.metrics),
                   window=[self.time, later.time], observed_s=round(later.time - self.time, 2),
                   peak_rss_kib_at_end=later.peak_rss_kib)
        if len(parts) > 1:
            out["engine_cpu_parts_s"] = parts
        return out


def warm_up(engine, paths, args, workdir):
    """Warms the fresh engine's JIT: `--warmup` instances through the ceiling client, no delay."""
    t0 = time.time()
    # No long polling: a stopped client must not leave a parked fetchAndLock behind, which the engine
    # would answer with (and lock) the first tasks of the measured run.
    proc = spawn([paths["ceiling"], "--engine-url", engine.url, "--delay-ms", "0", "--limit-secs", "600",
                  "--async-response-timeout-ms", "0"],
                 os.path.join(workdir, "warmup.log"))
    try:
        wait_polling(proc, engine.port, 60, "warm-up client")
        start_instances(paths, engine.url, args.warmup, args.phase_timeout)
        count, ok = wait_finished(engine.url, args.warmup, 300, proc, args.stall_seconds)
        if not ok:
            raise RuntimeError(f"warm-up: only {count}/{args.warmup} instances finished")
    finally:
        stop_process(proc)
    log(f"engine warmed up with {args.warmup} instances in {time.time() - t0:.1f} s")


def quiesce(cluster):
    """Before a contender on the shared cluster: nothing of the previous one left behind.

    No instance of the process may still run (any that does is deleted, and counted). And no long
    poll of the previous contender may still be parked: the engine keeps a parked fetchAndLock of a
    client that is gone until its asyncResponseTimeout (30 to 45 s) and would lock the next task
    created on that node for it. So per node: start one instance there; if its task is locked
    within 2 s, a parked poll took it: delete the instance and try again; once a task stays
    unlocked, that node has no parked poll left. Every such flush instance is deleted."""
    url = cluster.url
    out = dict(leftover_instances=0, parked_polls_flushed={})
    for _ in range(20):
        running = http_json(f"{url}/process-instance?processDefinitionKey={PROCESS_KEY}&maxResults=200")
        if not running:
            break
        out["leftover_instances"] += len(running)
        for inst in running:
            http_json(f"{url}/process-instance/{inst['id']}?skipCustomListeners=true", method="DELETE")
    if out["leftover_instances"]:
        log(f"deleted {out['leftover_instances']} instances left running by the previous contender")
    for i, node in enumerate(cluster.node_urls, 1):
        flushed = 0
        for _ in range(8):
            inst = http_json(f"{node}/process-definition/key/{PROCESS_KEY}/start", method="POST",
                             body={"businessKey": f"flush-{uuid.uuid4()}"})
            time.sleep(2.0)
            tasks = http_json(f"{node}/external-task?processInstanceId={inst['id']}")
            locked = any(t.get("workerId") for t in tasks or [])
            http_json(f"{node}/process-instance/{inst['id']}?skipCustomListeners=true", method="DELETE")
            if not locked:
                break
            flushed += 1
        else:
            raise RuntimeError(f"node {i}: still a parked long poll after {flushed} flush instances")
        out["parked_polls_flushed"][f"node{i}"] = flushed
    # The database keeps every earlier contender's history: how much of it there is now.
    out["historic_instances"] = http_json(f"{url}/history/process-instance/count?processDefinitionKey={PROCESS_KEY}")["count"]
    if any(out["parked_polls_flushed"].values()):
        log(f"flushed parked long polls left by the previous contender: {out['parked_polls_flushed']}")
    return out


def run_contender(key, spec, engine, paths, args, workdir, phases=("throughput", "paced", "backlog"),
                  n=None, fresh=True, tag=None):
    """One contender: start it, run `phases` in order, stop it.

    fresh: on a freshly started engine (deployed, warmed up), stopped again here; the requests are
    counted from its access log. Otherwise (the cluster) on the running engine after `quiesce`; the
    caller counts the requests with `add_requests` once the engine stopped (the logs are buffered)."""
    log(f"=== {key}: {spec['label']}")
    n = n or args.instances
    stall = args.cluster_stall if not fresh else args.stall_seconds
    timeout = 120 + n * 0.5
    if fresh:
        engine.start(tag or key)
    url = engine.url
    result = dict(key=key, label=spec["label"], argv=[os.path.relpath(a, REPO) if a.startswith(REPO) else a
                                                      for a in spec["argv"]],
                  loadavg_before=loadavg(), instances=n)
    proc = None
    try:
        if fresh:
            deploy(paths, url)
            if args.warmup > 0:
                warm_up(engine, paths, args, workdir)
        else:
            result["quiesce"] = quiesce(engine)
        base = finished_count(url)
        logfile = os.path.join(workdir, f"{tag or key}.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        proc = spawn(spec["argv"], logfile)
        for port in spec.get("ready_ports") or [engine.port]:
            wait_polling(proc, port, 120, key)
        time.sleep(1.0)
        result["contender_started_at"] = time.time()
        done_so_far, ok = base, True

        # ---- pickup (cluster): M instances at R/s on random nodes; task created -> completed per instance
        if "pickup" in phases and args.pickup_count > 0:
            q0 = Probe(proc, engine, spec)
            prefix = f"pickup-{key}-"
            # Each start on a node picked at random (seeded), on the node's own URL. Through the
            # LB's strict round robin, the node a start lands on would depend on the parity of the
            # requests the contender itself sent through the LB meanwhile.
            paced = Paced(engine.node_ports, args.pickup_count, args.pickup_rate, prefix, seed=1)
            paced.start()
            paced.join(timeout=args.pickup_count / args.pickup_rate + 120)
            pf, pok = wait_finished(url, done_so_far + args.pickup_count, 180, proc, stall)
            q1 = Probe(proc, engine, spec)
            result["pickup"] = dict(rate=args.pickup_rate, count=args.pickup_count, all_finished=pok,
                                    started_per_node={f"node{i}": c for i, c in enumerate(paced.per_port.values(), 1)},
                                    finished=pf - done_so_far, start_errors=paced.errors,
                                    starter_behind_max_s=round(paced.behind_max_s, 3), **q0.window(q1))
            result["pickup"].update(pickup_stats(url, prefix))
            pk = result["pickup"].get("pickup_ms", {})
            log(f"{key}: pickup {result['pickup']['measured']}/{args.pickup_count}: p50 {pk.get('p50')} ms, "
                f"p99 {pk.get('p99')} ms, max {pk.get('max')} ms")
            ok, done_so_far = pok, pf

        # ---- sparse pickup (cluster): one instance every S seconds, so that a poll parked on the
        # other node is not woken soon by the next task created on its own node
        if ok and "pickup" in phases and args.sparse_count > 0:
            q0 = Probe(proc, engine, spec)
            prefix = f"pickup-sparse-{key}-"
            paced = Paced(engine.node_ports, args.sparse_count, 1 / args.sparse_interval, prefix, seed=2)
            paced.start()
            paced.join(timeout=args.sparse_count * args.sparse_interval + 120)
            pf, pok = wait_finished(url, done_so_far + args.sparse_count, 180, proc, stall)
            q1 = Probe(proc, engine, spec)
            result["pickup_sparse"] = dict(interval_s=args.sparse_interval, count=args.sparse_count,
                                           started_per_node={f"node{i}": c
                                                             for i, c in enumerate(paced.per_port.values(), 1)},
                                           all_finished=pok, finished=pf - done_so_far, start_errors=paced.errors,
                                           starter_behind_max_s=round(paced.behind_max_s, 3), **q0.window(q1))
            result["pickup_sparse"].update(pickup_stats(url, prefix))
            pk = result["pickup_sparse"].get("pickup_ms", {})
            log(f"{key}: sparse pickup {result['pickup_sparse']['measured']}/{args.sparse_count}: p50 {pk.get('p50')} "
                f"ms, p99 {pk.get('p99')} ms, max {pk.get('max')} ms")
            ok, done_so_far = pok, pf

        # ---- throughput: N instances started (camunda-worker start --concurrency 16) while the contender runs
        if ok and "throughput" in phases:
            p0 = Probe(proc, engine, spec)
            start_instances(paths, url, n, timeout)
            t_started = time.time()
            finished, ok = wait_finished(url, done_so_far + n, timeout, proc, stall)
            finished -= done_so_far
            p1 = Probe(proc, engine, spec)
            result["throughput_started_after"] = p0.time
            result["throughput"] = dict(all_finished=ok, finished=finished, start_phase_s=round(t_started - p0.time, 2),
                                        start_rate_per_s=round(n / (t_started - p0.time), 1), **p0.window(p1))
            log(f"{key}: {finished}/{n} finished in {p1.time - p0.time:.1f} s (starts took {t_started - p0.time:.1f} s); "
                f"contender CPU {p1.cpu - p0.cpu:.2f} s, engine CPU {p0.window(p1)['engine_cpu_s']:.2f} s")
            done_so_far += finished

        # ---- paced: M instances at R/s, for the latency when the engine is not saturated
        if ok and "paced" in phases and args.paced_count > 0:
            p2 = Probe(proc, engine, spec)
            paced = Paced(engine.port, args.paced_count, args.paced_rate)
            paced.start()
            paced.join(timeout=args.paced_count / args.paced_rate + 120)
            pf, pok = wait_finished(url, done_so_far + args.paced_count, 120, proc, stall)
            p3 = Probe(proc, engine, spec)
            result["paced"] = dict(rate=args.paced_rate, count=args.paced_count, all_finished=pok,
                                   start_errors=paced.errors, starter_behind_max_s=round(paced.behind_max_s, 3),
                                   **p2.window(p3))
            log(f"{key}: paced {pf - done_so_far}/{args.paced_count} finished")
            ok, done_so_far = pok, pf

        # ---- backlog: the contender paused (SIGSTOP) while B instances are started, then resumed
        if ok and "backlog" in phases and args.backlog > 0:
            b = args.backlog
            t_backlog = time.time()
            # A stopped process cannot answer /metrics: read its counters before it stops (they
            # cannot move while it is stopped).
            m_stop = scrape_metrics(spec["metrics"]) if spec.get("metrics") else None
            proc.send_signal(signal.SIGSTOP)
            try:
                start_instances(paths, url, b, args.phase_timeout)
            finally:
                p4 = Probe(proc, engine, spec, metrics=m_stop or {})
                proc.send_signal(signal.SIGCONT)
            bf, bok = wait_finished(url, done_so_far + b, args.phase_timeout, proc, stall)
            p5 = Probe(proc, engine, spec)
            result["backlog"] = dict(count=b, all_finished=bok, finished=bf - done_so_far,
                                     start_phase_s=round(p4.time - t_backlog, 2), resumed_at=p4.time,
                                     **p4.window(p5))
            result["backlog_started_after"] = t_backlog
            log(f"{key}: backlog {bf - done_so_far}/{b} finished {p5.time - p4.time:.1f} s after resume")

        result["peak_rss_kib"] = status_kib(proc.pid, "VmHWM")
        result["loadavg_after"] = loadavg()
        instances = history(url, f"&startedAfter={urllib.parse.quote(engine_time(result['contender_started_at']))}")
        stop_process(proc)
        if key == "ceiling":
            try:
                with open(logfile) as f:
                    lines = [ln for ln in f if ln.startswith("{")]
                result["ceiling_counters"] = json.loads(lines[-1]) if lines else None
            except (OSError, ValueError):
                pass
    finally:
        if proc is not None:
            stop_process(proc)
        if fresh:
            engine.stop()
    finish_stats(result, instances)
    if fresh:
        add_requests(result, engine)
    return result


def engine_time(epoch):
    """An engine query date (yyyy-MM-dd'T'HH:mm:ss.SSSZ, UTC) a second before `epoch`."""
    t = dt.datetime.fromtimestamp(epoch - 1, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


def finish_stats(result, instances):
    """Instance statistics (from the engine's history) and CPU per instance of each phase."""
    def started_at(i):
        return engine_date(i["startTime"]).timestamp()

    paced_set = [i for i in instances if (i.get("businessKey") or "").startswith("paced-")]
    cut = result.get("backlog_started_after", float("inf"))
    if "throughput" in result:
        begin = result["throughput_started_after"]
        bulk = [i for i in instances if not is_special(i) and begin <= started_at(i) < cut]
        result["throughput"].update(instance_stats(bulk))
    if "paced" in result:
        result["paced"].update(instance_stats(paced_set))
    if "backlog" in result:
        bl = result["backlog"]
        backlog = [i for i in instances if not is_special(i) and started_at(i) >= cut]
        bl.update(instance_stats(backlog))
        ends = [engine_date(i["endTime"]).timestamp() for i in backlog if i.get("endTime")]
        if ends:
            drain = max(ends) - bl["resumed_at"]
            bl["drain_s"] = round(drain, 3)
            bl["drain_instances_per_s"] = round(len(ends) / drain, 2) if drain > 0 else None
    for phase in ("pickup", "pickup_sparse", "throughput", "paced", "backlog"):
        ph = result.get(phase)
        if not ph:
            continue
        done = ph.get("completed") or ph.get("measured")
        if done:
            ph["contender_cpu_ms_per_instance"] = round(ph["contender_cpu_s"] * 1000 / done, 3)
            ph["engine_cpu_ms_per_instance"] = round(ph["engine_cpu_s"] * 1000 / done, 3)
            ph["cpu_ratio_contender_to_engine"] = (round(ph["contender_cpu_s"] / ph["engine_cpu_s"], 4)
                                                   if ph["engine_cpu_s"] else None)
            if "engine_cpu_parts_s" in ph:
                ph["engine_cpu_parts_ms_per_instance"] = {k: round(v * 1000 / done, 3)
                                                          for k, v in ph["engine_cpu_parts_s"].items()}
    key = result["key"]
    t = result.get("throughput", {})
    if t:
        log(f"{key}: {t.get('instances_per_s')} instances/s, wall {t.get('wall_s')} s, "
            f"p50 {t.get('latency_ms', {}).get('p50')} ms, p99 {t.get('latency_ms', {}).get('p99')} ms, "
            f"peak RSS {result['peak_rss_kib'] / 1024:.1f} MiB")
    if "paced" in result:
        p = result["paced"]
        log(f"{key}: paced p50 {p.get('latency_ms', {}).get('p50')} ms, p99 {p.get('latency_ms', {}).get('p99')} ms")
    if "backlog" in result:
        bl = result["backlog"]
        log(f"{key}: backlog drained at {bl.get('drain_instances_per_s')} instances/s, "
            f"contender CPU {bl['contender_cpu_s']:.2f} s, engine CPU {bl['engine_cpu_s']:.2f} s")


def add_requests(result, engine):
    """Requests of the contender per phase from the engine's access logs (flushed once it stopped)."""
    for phase in ("pickup", "pickup_sparse", "throughput", "paced", "backlog"):
        ph = result.get(phase)
        if not ph or "window" not in ph:
            continue
        got = engine.requests(ph["window"][0], ph["window"][1], "contender")
        if got is None:
            continue
        counts, micros = got
        ph["engine_requests"] = counts
        ph["engine_request_micros_mean"] = {k: round(sum(v) / len(v)) for k, v in micros.items()}
        done = ph.get("completed") or ph.get("measured") or 0
        ph["requests_per_instance"] = round(sum(counts.values()) / done, 3) if done else None


def run_idle(engine, paths, args, workdir, keys):
    log(f"=== idle: {', '.join(keys)} at once: {args.idle_settle:g} s settling, then {args.idle_seconds:g} s measured")
    engine.start("idle")
    result = dict(seconds=args.idle_seconds, settle_s=args.idle_settle, contenders={}, loadavg_before=loadavg())
    procs, spawned = {}, {}
    try:
        deploy(paths, engine.url)
        specs = contenders(paths, engine.url, engine.port, args.metrics_port, 60)
        for key in keys:
            logfile = os.path.join(workdir, f"idle-{key}.log")
            if os.path.exists(logfile):
                os.remove(logfile)
            procs[key] = spawn(specs[key]["argv"], logfile)
            spawned[key] = time.time()
        for key, proc in procs.items():
            wait_polling(proc, engine.port, 120, key)
        time.sleep(args.idle_settle)
        m0 = scrape_metrics(args.metrics_port)
        c0 = {k: thread_cpu_ns(p.pid) for k, p in procs.items()}
        s0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        e0, t0 = cpu_seconds(engine.pid), time.time()
        time.sleep(args.idle_seconds)
        c1 = {k: thread_cpu_ns(p.pid) for k, p in procs.items()}
        s1 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        e1, t1 = cpu_seconds(engine.pid), time.time()
        m1 = scrape_metrics(args.metrics_port)
        for key, proc in procs.items():
            cpu = (c1[key] - c0[key]) / 1e9
            result["contenders"][key] = dict(label=specs[key]["label"], ua=specs[key]["ua"],
                                             cpu_s=round(cpu, 5), cpu_s_from_ticks=round(s1[key] - s0[key], 3),
                                             core_percent=round(cpu / (t1 - t0) * 100, 4),
                                             rss_kib=status_kib(proc.pid, "VmRSS"),
                                             peak_rss_kib=status_kib(proc.pid, "VmHWM"))
        if "cw-default" in result["contenders"]:
            result["contenders"]["cw-default"]["worker_metrics_requests"] = diff_counts(m1, m0)
        result["engine_cpu_s"] = round(e1 - e0, 3)
        result["window"] = [t0, t1]
        for proc in procs.values():
            stop_process(proc)
    finally:
        for proc in procs.values():
            stop_process(proc, grace=5)
        engine.stop()
    result["loadavg_after"] = loadavg()
    # Requests per contender, by User-Agent, from the access log.
    w0, w1 = result["window"]
    minutes = (w1 - w0) / 60
    for key, c in result["contenders"].items():
        reqs = (count_requests(engine.access_logs, w0, w1, ua=c["ua"]) or ({}, {}))[0]
        c["engine_requests"] = reqs
        c["requests_per_min"] = round(sum(reqs.values()) / minutes, 2)
        c["requests_per_min_by_endpoint"] = {k: round(v / minutes, 2) for k, v in reqs.items()}
        log(f"idle {key}: {c['requests_per_min']} req/min {reqs}, {c['core_percent']:.3f} % of a core, "
            f"RSS {c['rss_kib'] / 1024:.1f} MiB")
    # camunda-worker's start-up: its first 2 minutes (or what the run had of them), apart from the steady state.
    if "cw-default" in spawned:
        a = spawned["cw-default"]
        b = min(a + STARTUP_WINDOW_S, w1)
        reqs = (count_requests(engine.access_logs, a, b, ua="camunda-worker/") or ({}, {}))[0]
        mins = (b - a) / 60
        result["startup"] = dict(key="cw-default", window=[a, b], seconds=round(b - a, 1), engine_requests=reqs,
                                 requests_per_min=round(sum(reqs.values()) / mins, 2),
                                 requests_per_min_by_endpoint={k: round(v / mins, 2) for k, v in reqs.items()})
        log(f"idle cw-default start-up ({b - a:.0f} s after its start): {result['startup']['requests_per_min']} "
            f"req/min {reqs}")
    return result


def run_overhead(paths, args, workdir):
    log("=== worker overhead against the fake engine")
    results = []
    fake_log = os.path.join(workdir, "fake-engine.log")
    fake = spawn([paths["fake"], "--port", str(args.fake_port)], fake_log)
    try:
        deadline = time.time() + 20
        while True:
            try:
                http_json(f"http://127.0.0.1:{args.fake_port}/stats")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("fake engine did not come up")
                time.sleep(0.1)
        url = f"http://127.0.0.1:{args.fake_port}/engine-rest"
        for max_tasks in (10, 64):
            lb = loadavg()
            logfile = os.path.join(workdir, f"overhead-{max_tasks}.log")
            proc = spawn([paths["cw"], "--engine-url", url, "--metrics-addr", f"127.0.0.1:{args.metrics_port}",
                          "--correlation-delay", "0s", "--max-tasks", str(max_tasks)], logfile,
                         env={"RUST_LOG": "warn"})
            time.sleep(args.overhead_warmup)
            if proc.poll() is not None:
                raise RuntimeError(f"camunda-worker exited early against the fake engine (see {logfile})")
            s0 = http_json(f"http://127.0.0.1:{args.fake_port}/stats")
            c0, f0, t0 = cpu_seconds(proc.pid), cpu_seconds(fake.pid), time.time()
            time.sleep(args.overhead_seconds)
            s1 = http_json(f"http://127.0.0.1:{args.fake_port}/stats")
            c1, f1, t1 = cpu_seconds(proc.pid), cpu_seconds(fake.pid), time.time()
            rss = status_kib(proc.pid, "VmHWM")
            stop_process(proc)
            tasks = s1["completes"] - s0["completes"]
            cpu = c1 - c0
            r = dict(max_tasks=max_tasks, seconds=round(t1 - t0, 2), tasks=tasks,
                     messages=s1["messages"] - s0["messages"], requests=s1["requests"] - s0["requests"],
                     tasks_per_s=round(tasks / (t1 - t0), 1), worker_cpu_s=round(cpu, 3),
                     worker_cores=round(cpu / (t1 - t0), 3), fake_engine_cpu_s=round(f1 - f0, 3),
                     tasks_per_cpu_s=round(tasks / cpu, 1) if cpu else None,
                     cpu_us_per_task=round(cpu / tasks * 1e6, 1) if tasks else None,
                     requests_per_task=round((s1["requests"] - s0["requests"]) / tasks, 3) if tasks else None,
                     peak_rss_kib=rss, window=[t0, t1], loadavg_before=lb, loadavg_after=loadavg())
            log(f"overhead --max-tasks {max_tasks}: {r['tasks_per_s']} tasks/s, {r['cpu_us_per_task']} µs CPU/task, "
                f"{r['tasks_per_cpu_s']} tasks per CPU-second, worker {r['worker_cores']} cores, "
                f"peak RSS {rss / 1024:.1f} MiB")
            results.append(r)
    finally:
        stop_process(fake)
    return results


def run_mismatch(engine, paths, args, workdir):
    """camunda-worker (defaults) with every follow-up undeliverable, on more waiting tasks than its
    pending follow-up capacity: it completes tasks until the capacity is full, then fetching pauses.
    Memory at that point is its worst case with the default bounds."""
    n, cap = args.mismatch_instances, args.mismatch_capacity
    log(f"=== mismatch: {n} instances, every follow-up undeliverable, capacity {cap or 'default (4096)'}")
    result = dict(instances=n, capacity=cap or 4096, capacity_is_default=cap is None, hold_s=args.mismatch_hold,
                  loadavg_before=loadavg())
    engine.start("mismatch")
    port = args.metrics_port
    argv = [paths["cw"], "--engine-url", engine.url, "--metrics-addr", f"127.0.0.1:{port}",
            "--message-name", "no_such_message", "--correlation-timeout", "1h"]
    if cap:
        argv += ["--max-pending-follow-ups", str(cap)]
    result["argv"] = [os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in argv]
    proc = None
    try:
        deploy(paths, engine.url)
        t = time.time()
        start_instances(paths, engine.url, n, 120 + n * 0.5)
        result["start_phase_s"] = round(time.time() - t, 1)
        logfile = os.path.join(workdir, "mismatch.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        proc = spawn(argv, logfile)
        t_spawn = time.time()
        paused = False
        while time.time() < t_spawn + args.mismatch_wait:
            if proc.poll() is not None:
                raise RuntimeError(f"camunda-worker exited with {proc.returncode} (see {logfile})")
            if metric_sum(metrics_text(port), "camunda_worker_fetch_paused") == 1:
                paused = True
                break
            time.sleep(1.0)
        result["fetch_paused"] = paused
        result["paused_after_s"] = round(time.time() - t_spawn, 1) if paused else None
        if not paused:
            result["error"] = f"camunda_worker_fetch_paused did not become 1 within {args.mismatch_wait:g} s"
            log(f"mismatch: {result['error']}")
        else:
            log(f"mismatch: fetching paused {result['paused_after_s']:.0f} s after the start; holding "
                f"{args.mismatch_hold:g} s")
        m0 = scrape_metrics(port)
        c0, e0, t0 = cpu_seconds(proc.pid), cpu_seconds(engine.pid), time.time()
        time.sleep(args.mismatch_hold)
        c1, e1, t1 = cpu_seconds(proc.pid), cpu_seconds(engine.pid), time.time()
        text = metrics_text(port)
        result["window"] = [t0, t1]
        result["status_kib"] = {k: status_kib(proc.pid, k) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
        result["metrics"] = {name: metric_sum(text, f"camunda_worker_{name}")
                             for name in ("follow_ups_pending", "follow_ups_capacity", "fetch_paused",
                                          "tasks_completed_total", "tasks_fetched_total", "tasks_in_flight",
                                          "follow_ups_retried_total", "follow_ups_sent_total",
                                          "follow_ups_given_up_total")}
        result["hold"] = dict(contender_cpu_s=round(c1 - c0, 3), engine_cpu_s=round(e1 - e0, 3),
                              core_percent=round((c1 - c0) / (t1 - t0) * 100, 2),
                              worker_metrics_requests=diff_counts(scrape_metrics(port), m0))
        stop_process(proc, grace=5)
    finally:
        if proc is not None:
            stop_process(proc, grace=5)
        engine.stop()
    result["loadavg_after"] = loadavg()
    if "window" in result:
        got = count_requests(engine.access_logs, result["window"][0], result["window"][1], "contender")
        if got is not None:
            result["hold"]["engine_requests"] = got[0]
            result["hold"]["requests_per_s"] = round(sum(got[0].values()) / (result["window"][1] - result["window"][0]), 1)
    st, mt = result.get("status_kib", {}), result.get("metrics", {})
    if st:
        log(f"mismatch: VmHWM {st['VmHWM'] / 1024:.1f} MiB, VmRSS {st['VmRSS'] / 1024:.1f} MiB (anon "
            f"{st['RssAnon'] / 1024:.1f}, file {st['RssFile'] / 1024:.1f}); pending {mt.get('follow_ups_pending')}, "
            f"completed {mt.get('tasks_completed_total')}")
    return result


def run_cluster(paths, args, workdir, keys):
    """The 2-node cluster: each contender in turn (pickup, throughput), the ceiling through the LB last."""
    cl = Cluster(args.cluster_base_port, 2, workdir)
    n = args.cluster_instances
    log(f"=== cluster: 2 nodes on PostgreSQL behind HAProxy (:{cl.base_port}); {', '.join(keys)}")
    out = dict(nodes=2, lb_url=cl.lb_url, node_urls=cl.node_urls, java_opts=JAVA_OPTS, instances=n,
               pickup_rate=args.pickup_rate, pickup_count=args.pickup_count, sparse_interval_s=args.sparse_interval,
               sparse_count=args.sparse_count, warmup=args.warmup,
               loadavg_before=loadavg(), started_at=time.time(), runs={})
    limit = int((120 + n * 0.5) * 2 + 300)
    specs = cluster_contenders(paths, cl, args.metrics_port, limit)
    try:
        cl.start("cluster")
        out["cluster_start_s"] = cl.started_s
        deploy(paths, cl.url)
        if args.warmup > 0:
            warm_up(cl, paths, args, workdir)
        for key in keys:
            spec = specs[key]
            phases = ("throughput",) if key == "ceiling" else ("pickup", "throughput")
            try:
                out["runs"][key] = run_contender(key, spec, cl, paths, args, workdir, phases=phases, n=n, fresh=False,
                                                 tag=f"cluster-{key}")
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                log(f"cluster {key} failed: {e}")
                out["runs"][key] = dict(key=key, label=spec["label"], error=str(e))
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
        log(f"cluster failed: {e}")
        out["error"] = str(e)
    finally:
        cl.stop()
    for r in out["runs"].values():
        if not r.get("error"):
            add_requests(r, cl)
    out["loadavg_after"] = loadavg()
    out["finished_at"] = time.time()
    return out


def run_pg_vs_h2(engine, paths, args, workdir):
    """camunda-worker (defaults) on one node on PostgreSQL (the node's URL, no LB) and on the bundled
    single H2 node: N instances started while it runs, each on a fresh, warmed-up engine."""
    n = args.cluster_instances
    log(f"=== one node: PostgreSQL vs H2, camunda-worker (defaults), {n} instances")
    out = dict(instances=n, warmup=args.warmup, java_opts=JAVA_OPTS, loadavg_before=loadavg(),
               started_at=time.time(), runs={})
    limit = int((120 + n * 0.5) * 2 + 300)
    pg = Cluster(args.cluster_base_port, 1, workdir)
    for db, eng in (("postgres", pg), ("h2", engine)):
        spec = dict(contenders(paths, eng.url, eng.port, args.metrics_port, limit)["cw-default"])
        spec["label"] = f"camunda-worker (defaults) on one node, {'PostgreSQL' if db == 'postgres' else 'H2 in memory'}"
        try:
            out["runs"][db] = run_contender("cw-default", spec, eng, paths, args, workdir, phases=("throughput",), n=n,
                                            fresh=True, tag=f"{db}-cw-default")
            out["runs"][db]["database"] = db
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            log(f"{db} failed: {e}")
            out["runs"][db] = dict(key="cw-default", label=spec["label"], database=db, error=str(e))
        finally:
            eng.stop()
    out["loadavg_after"] = loadavg()
    out["finished_at"] = time.time()
    return out


# ---------------------------------------------------------------- facts, report


def cmd_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        text = (out.stdout + out.stderr).strip().splitlines()
        return re.sub(r"\x1b\[[0-9;]*m", "", text[0]) if text else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_facts(paths):
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
    return dict(
        cores=os.cpu_count(), cpu_model=model, mem_gib=round(mem_kib / 1024 / 1024, 1),
        kernel=platform.release(),
        os=cmd_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        java=cmd_version(["java", "-version"]), maven=cmd_version(["mvn", "-v"]),
        python=platform.python_version(), node=cmd_version(["node", "--version"]),
        rust=cmd_version(["rustc", "--version"]),
        camunda_worker=cmd_version([paths["cw"], "--version"]),
        engine="Camunda 7.21.0 on Spring Boot 3.2 (engine/engine.sh), in-memory H2, history level full, "
               "JVM " + JAVA_OPTS,
        postgres=short_version(cmd_version([postgres[-1], "--version"]) if postgres else None, "PostgreSQL"),
        haproxy=short_version(cmd_version([haproxy, "-v"]) if haproxy else None, "HAProxy"),
    )


def short_version(text, name):
    """`name` and the first version number in `text` ("HAProxy version 2.6.12-1+deb12u4 ..." -> "HAProxy 2.6.12")."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text or "")
    return f"{name} {m.group(1)}" if m else text


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def per_min(counts, minutes):
    return ", ".join(f"{k} {v / minutes:.2f}" for k, v in counts.items()) or "none"


def summarize(res):
    """Markdown: results tables, idle, overhead, mismatch, cluster, targets."""
    runs = res.get("runs") or {}

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    ceiling = get("ceiling", "throughput", "instances_per_s")
    ceiling_drain = get("ceiling", "backlog", "drain_instances_per_s")
    lines = []
    skipped = f" Phases skipped: {', '.join(res['skipped'])}." if res.get("skipped") else ""
    if runs:
        lines.append(f"Run of {res['started']}: fresh engine per contender, warmed with {res.get('warmup', 0)} "
                     f"instances (not counted); N = {res['instances']} instances started while the contender runs, "
                     f"then {res['paced_count']} paced at {res['paced_rate']:g}/s, then a backlog of {res['backlog']} "
                     f"drained; correlation delay 2 s; load average before the run {res['loadavg_start']}; "
                     f"whole run {res.get('total_seconds', 0) / 60:.1f} min. Absolute numbers are this machine's."
                     + skipped)
    else:
        lines.append(f"Run of {res['started']}: load average before the run {res['loadavg_start']}; whole run "
                     f"{res.get('total_seconds', 0) / 60:.1f} min. Absolute numbers are this machine's." + skipped)
    for phase in ("idle", "overhead"):
        if res.get(f"{phase}_error"):
            lines.append("")
            lines.append(f"**The {phase} phase failed**: {res[f'{phase}_error'][:300]}")
    if runs:
        lines.append("")
        lines.append("| contender | wall s | instances/s | × ceiling | backlog drain instances/s | × ceiling "
                     "| contender CPU ms/instance | engine CPU ms/instance | contender ÷ engine CPU | peak RSS MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, r in runs.items():
            t = r.get("throughput", {})
            b = r.get("backlog", {})
            ips, dips = t.get("instances_per_s"), b.get("drain_instances_per_s")
            note = ""
            if r.get("error"):
                note = f" (failed: {r['error'][:80]})"
            elif not t.get("all_finished"):
                note = f" (only {t.get('finished')}/{res['instances']} finished)"
            elif b and not b.get("all_finished"):
                note = f" (backlog: only {b.get('finished')}/{res['backlog']} finished)"
            ratio = t.get("cpu_ratio_contender_to_engine")
            lines.append(
                f"| {r['label']}{note} | {fmt(t.get('wall_s'))} | {fmt(ips)} "
                f"| {fmt(ips / ceiling if ips and ceiling else None, 2)} "
                f"| {fmt(dips)} | {fmt(dips / ceiling_drain if dips and ceiling_drain else None, 2)} "
                f"| {fmt(t.get('contender_cpu_ms_per_instance'), 2)} | {fmt(t.get('engine_cpu_ms_per_instance'), 1)} "
                f"| {fmt(ratio * 100 if ratio is not None else None, 1)} % | {fmt((r.get('peak_rss_kib') or 0) / 1024)} |")
        lines.append("")
        lines.append("| contender | requests/instance | p50 ms | p99 ms | paced p50 ms | paced p99 ms | requests by endpoint |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for key, r in runs.items():
            t = r.get("throughput", {})
            p = r.get("paced", {})
            reqs = ", ".join(f"{k} {v}" for k, v in (t.get("engine_requests") or {}).items())
            lines.append(f"| {r['label']} | {fmt(t.get('requests_per_instance'), 2)} "
                         f"| {fmt(t.get('latency_ms', {}).get('p50'))} | {fmt(t.get('latency_ms', {}).get('p99'))} "
                         f"| {fmt(p.get('latency_ms', {}).get('p50'))} | {fmt(p.get('latency_ms', {}).get('p99'))} "
                         f"| {reqs} |")
        cw_metrics = [(k, r["throughput"].get("worker_metrics_requests")) for k, r in runs.items()
                      if k.startswith("cw-") and r.get("throughput", {}).get("worker_metrics_requests")]
        if cw_metrics:
            lines.append("")
            lines.append("camunda-worker's own request counters in the same window: "
                         + "; ".join(f"{k}: {v}" for k, v in cw_metrics) + ".")
    if res.get("idle"):
        idle = res["idle"]
        w = idle.get("window") or [0, idle["seconds"]]
        minutes = (w[1] - w[0]) / 60 or 1
        lines.append("")
        settle = f"after {idle['settle_s']:g} s of settling, " if idle.get("settle_s") is not None else ""
        lines.append(f"Idle (no work, all at once on one engine; {settle}a window of {idle['seconds']:g} s):")
        lines.append("")
        lines.append("| contender | requests/min | per endpoint, per min | CPU s | % of a core | RSS MiB |")
        lines.append("|---|---:|---|---:|---:|---:|")
        for key, c in idle["contenders"].items():
            lines.append(f"| {c['label']} | {fmt(c['requests_per_min'], 2)} | {per_min(c['engine_requests'], minutes)} | "
                         f"{fmt(c['cpu_s'], 3)} | {fmt(c['core_percent'], 3)} % | {fmt(c['rss_kib'] / 1024)} |")
        su = idle.get("startup")
        if su:
            label = idle["contenders"].get(su["key"], {}).get("label", su["key"])
            lines.append(f"| {label}: start-up, its first {su['seconds']:g} s | {fmt(su['requests_per_min'], 2)} "
                         f"| {per_min(su['engine_requests'], su['seconds'] / 60 or 1)} | | | |")
    if res.get("overhead"):
        lines.append("")
        lines.append("camunda-worker against the fake engine (canned replies, no JVM, --correlation-delay 0s):")
        lines.append("")
        lines.append("| --max-tasks | tasks/s (wall) | worker cores busy | tasks per CPU-second | CPU µs per task "
                     "| requests/task | peak RSS MiB |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for o in res["overhead"]:
            lines.append(f"| {o['max_tasks']} | {fmt(o['tasks_per_s'], 0)} | {fmt(o['worker_cores'], 2)} "
                         f"| {fmt(o['tasks_per_cpu_s'], 0)} | {fmt(o['cpu_us_per_task'])} "
                         f"| {fmt(o['requests_per_task'], 2)} | {fmt(o['peak_rss_kib'] / 1024)} |")
    mm = res.get("mismatch")
    if mm:
        lines.append("")
        lines.append(mismatch_line(mm))
    cl = res.get("cluster")
    if cl:
        lines.extend(cluster_lines(cl, res.get("machine", {})))
    m = res["machine"]
    lines.append("")
    lines.append(f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_gib']:g} GiB RAM, {m['os']}, "
                 f"Linux {m['kernel']}; {m['java']}; {m['maven']}; Python {m['python']}; Node {m['node']}; "
                 f"{m['rust']}; {m['camunda_worker']}; engine: {m['engine']}"
                 + (f"; cluster: {m['postgres']}, {m['haproxy']}" if cl and m.get("postgres") else "") + ".")
    lines.append("")
    lines.append("Targets (camunda-worker at its defaults):")
    lines.append("")
    for name, ok, detail in targets(res):
        mark = "met" if ok else "missed"
        lines.append(f"- **{mark}**: {name}: {detail}")
    return "\n".join(lines) + "\n"


def mismatch_line(mm):
    what = (f"Every follow-up undeliverable (`--message-name no_such_message --correlation-timeout 1h`, "
            f"{mm['instances']} instances waiting, pending follow-ups capacity {mm['capacity']}"
            f"{' (the default)' if mm.get('capacity_is_default') else ' (quick run; the default is 4096)'}): ")
    if "status_kib" not in mm:
        return what + f"failed: {mm.get('error', 'no measurement')}."
    st, mt, hold = mm["status_kib"], mm.get("metrics", {}), mm.get("hold", {})
    pending = mt.get("follow_ups_pending")
    text = (f"peak RSS {st['VmHWM'] / 1024:.1f} MiB with {fmt(int(pending) if pending is not None else None)} "
            f"follow-ups pending (VmRSS {st['VmRSS'] / 1024:.1f} MiB: anonymous {st['RssAnon'] / 1024:.1f}, "
            f"file {st['RssFile'] / 1024:.1f}); {fmt(int(mt['tasks_completed_total']) if mt.get('tasks_completed_total') is not None else None)} "
            f"tasks completed; ")
    if mm.get("fetch_paused"):
        text += f"fetching paused {mm['paused_after_s']:g} s after the start"
    else:
        text += f"**fetching did not pause** ({mm.get('error')})"
    if hold:
        text += (f"; over the following {mm['hold_s']:g} s it used {hold.get('core_percent')} % of a core and sent "
                 f"{fmt(hold.get('requests_per_s'))} requests/s "
                 f"({', '.join(f'{k} {v}' for k, v in (hold.get('engine_requests') or {}).items()) or 'none'})")
    return what + text + "."


def cluster_lines(cl, machine):
    lines = []
    if "runs" in cl:
        lines.extend(two_node_lines(cl))
    pv = cl.get("pg_vs_h2")
    if pv:
        lines.extend(pg_vs_h2_lines(pv, machine))
    return lines


def two_node_lines(cl):
    lines = [""]
    n, rate, cnt = cl["instances"], cl["pickup_rate"], cl["pickup_count"]
    lines.append(f"Cluster (2 nodes on PostgreSQL, HAProxy round robin): one cluster for all contenders, one "
                 f"contender at a time, warmed with {cl.get('warmup', 0)} instances through the LB; JVM "
                 f"{cl['java_opts']}; load average {cl.get('loadavg_before')} before, {cl.get('loadavg_after')} after. "
                 f"Pickup: {cnt} instances started at {rate:g}/s, each on a node picked at random (seeded: the "
                 f"same sequence of nodes for every contender), on that node's own URL — through the LB's strict "
                 f"round robin, the node of a start would depend on the parity of the contender's own requests "
                 f"through the LB in between; per instance, its external task's successLog − creationLog timestamp "
                 f"from `/history/external-task-log`, i.e. the time until the task was picked up plus one "
                 f"complete call. Sparse: {cl.get('sparse_count', 0)} instances, one every "
                 f"{cl.get('sparse_interval_s', 0):g} s, the same way. Throughput: {n} instances started through the "
                 f"LB while the contender runs (first start to last end).")
    if cl.get("error"):
        lines.append("")
        lines.append(f"**The cluster phase failed**: {cl['error'][:300]}")
    runs = cl.get("runs", {})
    ceiling = runs.get("ceiling", {}).get("throughput", {}).get("instances_per_s")
    if runs:
        lines.append("")
        lines.append("| contender | pickup p50 ms | p90 | p99 | max | sparse p50 ms | sparse p99 | sparse max "
                     "| instances/s | × ceiling (LB) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, r in runs.items():
            pk, sp = r.get("pickup", {}), r.get("pickup_sparse", {})
            pm, sm = pk.get("pickup_ms", {}), sp.get("pickup_ms", {})
            t = r.get("throughput", {})
            ips = t.get("instances_per_s")
            notes = []
            if r.get("error"):
                notes.append(f"failed: {r['error'][:80]}")
            for what, ph in (("pickup", pk), ("sparse", sp)):
                if ph and (not ph.get("all_finished") or ph.get("missing")):
                    notes.append(f"{what}: {ph.get('measured')}/{ph.get('count')} measured")
            if t and not t.get("all_finished"):
                notes.append(f"only {t.get('finished')}/{n} finished")
            note = f" ({'; '.join(notes)})" if notes else ""
            lines.append(f"| {r['label']}{note} | {fmt(pm.get('p50'))} | {fmt(pm.get('p90'))} | {fmt(pm.get('p99'))} "
                         f"| {fmt(pm.get('max'))} | {fmt(sm.get('p50'))} | {fmt(sm.get('p99'))} | {fmt(sm.get('max'))} "
                         f"| {fmt(ips)} | {fmt(ips / ceiling if ips and ceiling else None, 2)} |")
    return lines


def pg_vs_h2_lines(pv, machine):
    lines = []
    if pv:
        lines.append("")
        lines.append(f"One node: PostgreSQL vs H2 (camunda-worker at its defaults, {pv['instances']} instances started "
                     f"while it runs, each on a fresh engine warmed with {pv.get('warmup', 0)} instances; same JVM "
                     f"options; PostgreSQL with fsync, synchronous_commit and full_page_writes off, as engine.sh sets "
                     f"it up; the node's own URL, no LB):")
        lines.append("")
        lines.append("| database | instances/s | wall s | engine JVM CPU ms/instance | PostgreSQL CPU ms/instance "
                     "| worker CPU ms/instance | requests/instance |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for db, r in pv.get("runs", {}).items():
            t = r.get("throughput", {})
            parts = t.get("engine_cpu_parts_ms_per_instance") or {}
            jvm = parts.get("jvm", t.get("engine_cpu_ms_per_instance"))
            name = {"postgres": machine.get("postgres") or "PostgreSQL", "h2": "H2 (in memory, in the engine's JVM)"}[db]
            note = f" (failed: {r['error'][:80]})" if r.get("error") else (
                f" (only {t.get('finished')}/{pv['instances']} finished)" if t and not t.get("all_finished") else "")
            lines.append(f"| {name}{note} | {fmt(t.get('instances_per_s'))} | {fmt(t.get('wall_s'))} | {fmt(jvm, 1)} "
                         f"| {fmt(parts.get('postgres') if db == 'postgres' else None, 1)} "
                         f"| {fmt(t.get('contender_cpu_ms_per_instance'), 2)} | {fmt(t.get('requests_per_instance'), 2)} |")
    return lines


def targets(res):
    runs = res.get("runs") or {}

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    out = []
    key = "cw-default"
    if key in runs and not runs[key].get("error"):
        for phase, field, what in (("throughput", "instances_per_s", "instances/s"),
                                   ("backlog", "drain_instances_per_s", "backlog drain instances/s")):
            ips, ceiling, py = get(key, phase, field), get("ceiling", phase, field), get("py-default", phase, field)
            if ips and ceiling:
                out.append((f"{key} {what} ≥ 0.95 × ceiling", ips >= 0.95 * ceiling,
                            f"{ips:.1f} vs {ceiling:.1f} = {ips / ceiling:.2f} ×"))
            if ips and py:
                out.append((f"{key} {what} ≥ 5 × Python client at its defaults", ips >= 5 * py,
                            f"{ips:.1f} vs {py:.1f} = {ips / py:.1f} ×"))
        t = runs[key].get("throughput", {})
        ratio = t.get("cpu_ratio_contender_to_engine")
        if ratio:
            out.append((f"{key} CPU ≤ 1/20 of the engine's", ratio <= 0.05,
                        f"{t['contender_cpu_ms_per_instance']:.2f} ms vs {t['engine_cpu_ms_per_instance']:.1f} ms "
                        f"per instance = 1/{1 / ratio:.0f}"))
        p = runs[key].get("paced", {})
        p99 = p.get("latency_ms", {}).get("p99")
        if p99 is not None:
            out.append((f"{key} p99 (completed − started − delay) ≤ 100 ms with the engine not saturated "
                        f"({p['rate']:g} instances/s)", p99 <= 100,
                        f"p99 {p99:.1f} ms, p50 {p['latency_ms']['p50']:.1f} ms"
                        + (f" (ceiling p99 {get('ceiling', 'paced', 'latency_ms')['p99']:.1f} ms)"
                           if get("ceiling", "paced", "latency_ms") else "")))
        if runs[key].get("peak_rss_kib"):
            rss = runs[key]["peak_rss_kib"] / 1024
            out.append((f"peak RSS ≤ 15 MiB over the whole run on the real engine ({key}: "
                        f"{runs[key]['label']})", rss <= 15, f"{rss:.1f} MiB"))
    elif key in runs:
        out.append((f"{key} measured", False, f"failed: {runs[key]['error'][:200]}"))
    if res.get("idle") and "cw-default" in res["idle"]["contenders"]:
        idle = res["idle"]
        c = idle["contenders"]["cw-default"]
        by = ", ".join(f"{k} {v}" for k, v in c["engine_requests"].items())
        settle = f", after {idle['settle_s']:g} s of settling" if idle.get("settle_s") is not None else ""
        out.append((f"idle ≤ 2 requests/min ({idle['seconds']:g} s window{settle})", c["requests_per_min"] <= 2,
                    f"{c['requests_per_min']:.2f}/min ({by or 'none'})"))
        out.append(("idle < 0.1 % of a core", c["core_percent"] < 0.1, f"{c['core_percent']:.3f} %"))
    return out


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in (res.get("runs") or {}).values() if r.get("throughput", {}).get("instances_per_s")]
    if not runs:
        return
    names = [r["key"] for r in runs]
    colors = ["#d9534f" if n.startswith("cw-") else ("#777777" if n == "ceiling" else "#5b8ff9") for n in names]
    x = list(range(len(names)))

    def values(phase, field):
        return [r.get(phase, {}).get(field) or 0 for r in runs]

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (a1, a2), (a3, a4) = axes
    for ax, phase, field, title in ((a1, "throughput", "instances_per_s",
                                     f"Throughput: {res['instances']} instances started while it runs"),
                                    (a2, "backlog", "drain_instances_per_s",
                                     f"Backlog of {res['backlog']} drained (instances/s)")):
        bars = ax.bar(names, values(phase, field), color=colors)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(title + " — higher is better", fontsize=10)
        ax.set_ylabel("instances/s (this machine)")
        ax.tick_params(axis="x", rotation=30)
    w = 0.4
    b1 = a3.bar([i - w / 2 for i in x], values("throughput", "contender_cpu_ms_per_instance"), w,
                label="worker CPU", color=colors)
    b2 = a3.bar([i + w / 2 for i in x], values("throughput", "engine_cpu_ms_per_instance"), w,
                label="engine JVM CPU", color="#bbbbbb")
    a3.bar_label(b1, fmt="%.2f", fontsize=7)
    a3.bar_label(b2, fmt="%.1f", fontsize=7)
    a3.set_xticks(x)
    a3.set_xticklabels(names, rotation=30)
    a3.set_yscale("log")
    a3.set_title("CPU ms per instance, worker vs engine (log scale) — lower is better", fontsize=10)
    a3.legend(fontsize=8)
    rss = [(r.get("peak_rss_kib") or 0) / 1024 for r in runs]
    b4 = a4.bar(names, rss, color=colors)
    a4.bar_label(b4, fmt="%.1f", fontsize=8)
    a4.set_yscale("log")
    a4.set_title("Peak RSS of the worker, MiB (log scale) — lower is better", fontsize=10)
    a4.tick_params(axis="x", rotation=30)
    m = res["machine"]
    fig.suptitle(f"camunda-worker benchmark on Camunda 7.21 (H2) — {m['cpu_model']}, {m['cores']} cores, "
                 f"{m['mem_gib']:g} GiB — {res['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cluster_chart(res, path):
    """Pickup latency (p50, p99, max) and throughput per cluster contender."""
    cl = res.get("cluster") or {}
    runs = [r for r in cl.get("runs", {}).values() if not r.get("error")]
    if not runs:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["key"] for r in runs]
    colors = ["#d9534f" if n.startswith("cw-") else ("#777777" if n == "ceiling" else "#5b8ff9") for n in names]
    fig, (a1, a3, a2) = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, phase, what in ((a1, "pickup", f"{cl['pickup_count']} instances at {cl['pickup_rate']:g}/s"),
                            (a3, "pickup_sparse", f"{cl.get('sparse_count')} instances, one every "
                                                  f"{cl.get('sparse_interval_s', 0):g} s")):
        with_pickup = [r for r in runs if r.get(phase, {}).get("pickup_ms")]
        x = list(range(len(with_pickup)))
        w = 0.27
        for off, q, color in ((-w, "p50", "#9ecae1"), (0, "p99", "#3182bd"), (w, "max", "#08519c")):
            vals = [max(r[phase]["pickup_ms"][q], 0.1) for r in with_pickup]
            bars = ax.bar([i + off for i in x], vals, w, label=q, color=color)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels([r["key"] for r in with_pickup])
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
        ax.set_title(f"Pickup (task created → completed), {what} — lower is better", fontsize=9)
        ax.legend(fontsize=8)
    bars = a2.bar(names, [r.get("throughput", {}).get("instances_per_s") or 0 for r in runs], color=colors)
    a2.bar_label(bars, fmt="%.0f", fontsize=8)
    a2.set_ylabel("instances/s (this machine)")
    a2.set_title(f"Throughput: {cl['instances']} instances through the LB — higher is better", fontsize=10)
    fig.suptitle(f"camunda-worker on a 2-node Camunda 7.21 cluster (PostgreSQL, HAProxy round robin) — "
                 f"{res['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def update_benchmarks_md(summary):
    path = os.path.join(REPO, "BENCHMARKS.md")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        text = f.read()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + summary + end + tail)
    return True


def write_reports(res, out_dir):
    summary = summarize(res)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    chart(res, os.path.join(out_dir, "chart.png"))
    cluster_chart(res, os.path.join(out_dir, "cluster.png"))
    return summary


# ---------------------------------------------------------------- main


ALL = ["cw-default", "cw-10", "py-default", "py-tuned", "js", "java", "ceiling"]
CLUSTER_ALL = ["cw-nodes", "cw-lb", "py", "js", "java", "ceiling"]
PHASES = ["throughput", "idle", "overhead", "mismatch", "cluster", "pg-h2"]


# Sizes of a quick and of a full run: (quick, full). An option given on the command line wins.
SIZES = {
    "warmup": (100, 500),
    "idle_seconds": (60, 300),
    "idle_settle": (20, 120),
    "mismatch_instances": (600, 4500),
    "mismatch_capacity": (512, None),  # full run: the worker's own default (4096)
    "mismatch_wait": (120, 300),
    "mismatch_hold": (10, 20),
    "cluster_instances": (200, 1000),
    "pickup_count": (50, 300),
    "sparse_count": (6, 20),
    "stall_seconds": (30, 60),
    "overhead_warmup": (2, 3),
    "overhead_seconds": (5, 15),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: every phase with small numbers (200 instances, short idle/overhead/mismatch, "
                         "cluster with 200 instances and 50 pickups)")
    ap.add_argument("--only", default=",".join(ALL), help=f"contenders, comma-separated (of {','.join(ALL)})")
    ap.add_argument("--skip", default="", help=f"phases to skip, comma-separated (of {','.join(PHASES)})")
    ap.add_argument("--engine-port", type=int, default=18200)
    ap.add_argument("--fake-port", type=int, default=18201)
    ap.add_argument("--metrics-port", type=int, default=18202)
    ap.add_argument("--paced-rate", type=float, default=25.0)
    ap.add_argument("--paced-count", type=int, default=500)
    ap.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 300, quick 60)")
    ap.add_argument("--idle-settle", type=float, default=None, help="idle settling before the window (default 120, "
                                                                     "quick 20)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="instances run through each fresh engine (ceiling client, no delay) before measuring "
                         "(default 500, quick 100; 0 = none)")
    ap.add_argument("--backlog", type=int, default=None,
                    help="instances started while the contender is paused, then drained (default = --instances)")
    ap.add_argument("--mismatch-instances", type=int, default=None, help="default 4500, quick 600")
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
        print(summary)
        return
    missing = [f"--{a.replace('_', '-')}" for a in ("cw_bin", "ceiling_bin", "fake_bin", "java_jar")
               if not getattr(args, a)]
    if missing:
        ap.error(f"{', '.join(missing)} required (bench/run.sh passes them)")
    q = args.quick
    if q and args.instances == 2000:
        args.instances = 200
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
    out_dir = args.out or os.path.join(BENCH, "results", "quick" if q else "")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    workdir = os.path.join(BENCH, ".work")
    os.makedirs(workdir, exist_ok=True)
    paths = dict(cw=os.path.abspath(args.cw_bin), ceiling=os.path.abspath(args.ceiling_bin),
                 fake=os.path.abspath(args.fake_bin), java_jar=os.path.abspath(args.java_jar),
                 python=os.path.join(BENCH, ".venv", "bin", "python"))
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL]
    if unknown:
        ap.error(f"unknown contenders {unknown} (of {','.join(ALL)})")
    cluster_keys = [k.strip() for k in args.cluster_contenders.split(",") if k.strip()]
    unknown = [k for k in cluster_keys if k not in CLUSTER_ALL]
    if unknown:
        ap.error(f"unknown cluster contenders {unknown} (of {','.join(CLUSTER_ALL)})")
    cluster_keys = [k for k in CLUSTER_ALL if k in cluster_keys]  # the ceiling last
    skip = set(s.strip() for s in args.skip.split(",") if s.strip())
    unknown = skip - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)} (of {','.join(PHASES)})")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    engine = Engine(args.engine_port, workdir)
    t_begin = time.time()
    res = dict(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), instances=args.instances, quick=q,
               backlog=args.backlog, warmup=args.warmup,
               paced_rate=args.paced_rate, paced_count=args.paced_count, loadavg_start=loadavg(),
               machine=machine_facts(paths), runs={}, idle=None, overhead=None, mismatch=None, cluster=None,
               skipped=sorted(skip), phase_windows={},
               command=os.environ.get("BENCH_COMMAND", " ".join(["bench/bench.py"] + sys.argv[1:])))

    def phase(name, fn):
        t0, lb = time.time(), loadavg()
        try:
            return fn()
        finally:
            res["phase_windows"][name] = dict(window=[t0, time.time()], seconds=round(time.time() - t0, 1),
                                              loadavg_before=lb, loadavg_after=loadavg())

    def failed(name, e):
        log(f"{name} failed: {e}")
        return dict(error=str(e))

    try:
        if "throughput" not in skip:
            def throughput():
                limit = int(args.phase_timeout * 2 + 300)
                for key in keys:
                    spec = contenders(paths, engine.url, engine.port, args.metrics_port, limit)[key]
                    try:
                        res["runs"][key] = run_contender(key, spec, engine, paths, args, workdir)
                    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                        log(f"{key} failed: {e}")
                        res["runs"][key] = dict(key=key, label=spec["label"], error=str(e), throughput={})
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
    finally:
        cleanup()
        engine.stop()
    res["total_seconds"] = round(time.time() - t_begin, 1)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    summary = write_reports(res, out_dir)
    if not q and args.out is None and set(keys) == set(ALL) and set(cluster_keys) == set(CLUSTER_ALL) and not skip:
        if update_benchmarks_md(summary):
            log("BENCHMARKS.md results section updated")
    print(summary)
    log(f"done in {res['total_seconds']:.0f} s; results in {os.path.relpath(out_dir, REPO)}/")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
