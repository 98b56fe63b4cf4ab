"""The engines the contenders run against and the driver's side of talking to them: the engine REST
calls (history, counts), the single bundled H2 engine and the PostgreSQL cluster (both through
engine/engine.sh), deploying, starting instances in bulk or at a paced rate, waiting for them to
finish, and readying an engine for the next contender (JIT warm-up; on the cluster, flushing what the
previous contender left behind)."""

import datetime as dt
import http.client
import json
import os
import random
import subprocess
import threading
import time
import urllib.request
import uuid

from .common import DRIVER_UA, ENGINE_SH, JAVA_OPTS, PROCESS_KEY, REPO, SPECIAL_PREFIXES, log, spawn, stop_process
from .measurements import access_log_args, count_requests, cpu_seconds, wait_polling


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

    def start(self, label, engine_args=()):
        """Starts a fresh engine; `engine_args` go to Spring Boot after the access log's
        (e.g. `--camunda.bpm.history-level=audit`)."""
        self.stop()
        logdir = os.path.join(self.workdir, "access")
        os.makedirs(logdir, exist_ok=True)
        path = os.path.join(logdir, f"access-{label}.log")
        if os.path.exists(path):
            os.remove(path)
        self.access_logs = [path]
        started = time.time()
        out = subprocess.run([ENGINE_SH, "start", *access_log_args(logdir, f"access-{label}"), *engine_args],
                             env=self.env(), check=False, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"engine.sh start failed:\n{out.stderr[-3000:]}")
        with open(os.path.join(REPO, "engine", ".run", f"engine-{self.port}.pid")) as f:
            self.pid = int(f.read().strip())
        log(f"engine up on :{self.port} (pid {self.pid}) in {time.time() - started:.0f} s")

    def stop(self):
        subprocess.run([ENGINE_SH, "stop"], env=self.env(), check=False, capture_output=True, text=True,
                       timeout=120)
        self.pid = None

    def cpu(self):
        """CPU seconds so far by part: the engine JVM (H2 runs inside it)."""
        return {"jvm": cpu_seconds(self.pid) if self.pid else 0.0}

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
                             env=self.env(), check=False, capture_output=True, text=True, timeout=1200)
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
                       check=False, capture_output=True, text=True, timeout=180)
        self.node_pids, self.pg_pid, self.lb_pid = [], None, None

    def cpu(self):
        """CPU seconds so far by part: engine JVMs, PostgreSQL (postmaster and its backends), HAProxy."""
        return {"jvm": sum(cpu_seconds(p) for p in self.node_pids if p),
                "postgres": cpu_seconds(self.pg_pid) if self.pg_pid else 0.0,
                "haproxy": cpu_seconds(self.lb_pid) if self.lb_pid else 0.0}

    def requests(self, t0, t1, who):
        return count_requests(self.access_logs, t0, t1, who)


def history_level_args(level):
    """Spring Boot arguments for an engine at history `level` (engine.sh's default is full)."""
    return [f"--camunda.bpm.history-level={level}"]


def history_records(url):
    """How much of what only some history levels write the engine holds: the external-task log
    and the historic variable updates (both `full` only), to confirm the level a run had."""
    return {"external_task_log": http_json(f"{url}/history/external-task-log/count")["count"],
            "variable_updates": http_json(f"{url}/history/detail/count?variableUpdates=true")["count"]}


def deploy(paths, url, bpmn=None):
    """Deploys the bundled process, or the BPMN file `bpmn`."""
    files = [bpmn] if bpmn else []
    dep = subprocess.run([paths["cw"], "deploy", "--engine-url", url, "--metrics-addr", "127.0.0.1:0", *files],
                         check=False, capture_output=True, text=True, timeout=120)
    if dep.returncode != 0:
        raise RuntimeError(f"deploy failed: {dep.stderr[-2000:]}")


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
                              "--metrics-addr", "127.0.0.1:0"], check=False, capture_output=True, text=True,
                             timeout=timeout)
    if started.returncode != 0:
        raise RuntimeError(f"starter failed: {started.stderr[-2000:]}")


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
    out = {"leftover_instances": 0, "parked_polls_flushed": {}}
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


def engine_time(epoch):
    """An engine query date (yyyy-MM-dd'T'HH:mm:ss.SSSZ, UTC) a second before `epoch`."""
    t = dt.datetime.fromtimestamp(epoch - 1, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"
