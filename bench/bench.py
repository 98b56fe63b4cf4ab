#!/usr/bin/env python3
"""camunda-worker benchmark driver (run it through bench/run.sh, which installs what it needs).

Phases, each on a freshly started bundled engine (engine/engine.sh, in-memory H2, same JVM
settings every time):

  throughput  per contender: start the contender, wait until it long-polls the engine, start N
              instances with `camunda-worker start --count N --concurrency 16` while it runs, wait
              until the engine's history shows all N COMPLETED; then a paced run (R instances/s,
              M instances) on the same engine for the unsaturated latency; stop, restart the engine.
  idle        all real workers at once on one engine, no work, 60 s: requests, CPU, RSS.
  overhead    camunda-worker against bench/ceiling's fake engine (canned replies, no JVM),
              --correlation-delay 0s: tasks/s, CPU microseconds per task.

Requests are counted from the engine's Tomcat access log (enabled the same way for every
contender); the contender is told apart from the starter and this driver by path and User-Agent.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import platform
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


def history(url):
    out, first = [], 0
    while True:
        page = http_json(f"{url}/history/process-instance?processDefinitionKey={PROCESS_KEY}"
                         f"&firstResult={first}&maxResults=500", timeout=60)
        out.extend(page)
        if len(page) < 500:
            return out
        first += 500


def scrape_metrics(port):
    """camunda-worker's request counts by endpoint from its Prometheus text."""
    counts = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        m = re.match(r'camunda_worker_engine_request_duration_seconds_count\{endpoint="([^"]+)"\}\s+(\S+)', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + float(m.group(2))
    return counts


def diff_counts(after, before):
    if after is None or before is None:
        return None
    keys = set(after) | set(before)
    return {k: int(after.get(k, 0) - before.get(k, 0)) for k in sorted(keys) if after.get(k, 0) - before.get(k, 0)}


# ---------------------------------------------------------------- engine


class Engine:
    """The bundled engine on a dedicated port, with a Tomcat access log per start."""

    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}/engine-rest"
        self.pid = None
        self.access_log = None

    def env(self):
        return {**os.environ, "ENGINE_PORT": str(self.port)}

    def start(self, label):
        self.stop()
        logdir = os.path.join(self.workdir, "access")
        os.makedirs(logdir, exist_ok=True)
        self.access_log = os.path.join(logdir, f"access-{label}.log")
        if os.path.exists(self.access_log):
            os.remove(self.access_log)
        args = [
            "--logging.level.root=WARN",
            "--server.tomcat.accesslog.enabled=true",
            f"--server.tomcat.accesslog.directory={logdir}",
            f"--server.tomcat.accesslog.prefix=access-{label}",
            "--server.tomcat.accesslog.suffix=.log",
            "--server.tomcat.accesslog.rotate=false",
            "--server.tomcat.accesslog.pattern=%{end:msec}t|%m|%U|%s|%D|%{User-Agent}i",
        ]
        started = time.time()
        out = subprocess.run([ENGINE_SH, "start", *args], env=self.env(), capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"engine.sh start failed:\n{out.stderr[-3000:]}")
        with open(os.path.join(REPO, "engine", ".run", f"engine-{self.port}.pid")) as f:
            self.pid = int(f.read().strip())
        log(f"engine up on :{self.port} (pid {self.pid}) in {time.time() - started:.0f} s")

    def stop(self):
        subprocess.run([ENGINE_SH, "stop"], env=self.env(), capture_output=True, text=True, timeout=120)
        self.pid = None

    def requests(self, t0, t1, who):
        """Access-log lines ending in [t0, t1] (epoch s) made by `who` (contender|starter|driver|all)."""
        counts, micros = {}, {}
        if not self.access_log or not os.path.exists(self.access_log):
            return None
        with open(self.access_log, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("|", 5)
                if len(parts) < 6:
                    continue
                end_ms, method, path, status, took, agent = parts
                try:
                    end = int(end_ms) / 1000.0
                except ValueError:
                    continue
                if not (t0 <= end <= t1):
                    continue
                if classify(path, agent) != who and who != "all":
                    continue
                ep = endpoint_of(method, path)
                counts[ep] = counts.get(ep, 0) + 1
                micros.setdefault(ep, []).append(int(took) if took.isdigit() else 0)
        return counts, micros


def classify(path, agent):
    if agent.startswith(DRIVER_UA) or agent.startswith("curl"):
        return "driver"
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
    if p == "/message":
        return "message"
    if p.startswith("/event-subscription"):
        return "eventSubscription"
    if p.startswith("/history/"):
        return "history"
    return f"{method} {p}"


# ---------------------------------------------------------------- contenders


def contenders(paths, url, engine_port, metrics_port, limit_secs):
    cw = paths["cw"]
    py = [paths["python"], os.path.join(BENCH, "python", "worker.py"), url]
    js = ["node", os.path.join(BENCH, "js", "worker.mjs"), url]
    java = ["java", "-jar", paths["java_jar"], url]
    m = f"127.0.0.1:{metrics_port}"
    return {
        "cw-default": dict(label="camunda-worker (defaults: --max-tasks 10)",
                           argv=[cw, "--engine-url", url, "--metrics-addr", m], metrics=metrics_port,
                           ua="camunda-worker/"),
        "cw-tuned": dict(label="camunda-worker --max-tasks 64",
                         argv=[cw, "--engine-url", url, "--metrics-addr", m, "--max-tasks", "64"],
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


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


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
        latency_ms=dict(p50=round(percentile(lat_ms, 0.5), 1), p90=round(percentile(lat_ms, 0.9), 1),
                        p99=round(percentile(lat_ms, 0.99), 1), max=round(max(lat_ms), 1),
                        min=round(min(lat_ms), 1)),
    )


class Paced(threading.Thread):
    """Starts `count` instances at `rate`/s from one thread with one keep-alive connection."""

    def __init__(self, port, count, rate):
        super().__init__(daemon=True)
        self.port, self.count, self.rate = port, count, rate
        self.errors = 0
        self.behind_max_s = 0.0

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        t0 = time.time()
        for i in range(self.count):
            due = t0 + i / self.rate
            now = time.time()
            if due > now:
                time.sleep(due - now)
            else:
                self.behind_max_s = max(self.behind_max_s, now - due)
            body = json.dumps({"businessKey": f"paced-{uuid.uuid4()}"})
            try:
                conn.request("POST", f"/engine-rest/process-definition/key/{PROCESS_KEY}/start", body,
                             {"Content-Type": "application/json", "User-Agent": DRIVER_UA})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
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
        self.engine_cpu = cpu_seconds(engine.pid)
        if metrics is None and spec.get("metrics"):
            metrics = scrape_metrics(spec["metrics"])
        self.metrics = metrics
        self.peak_rss_kib = status_kib(proc.pid, "VmHWM")
        self.time = time.time()

    def window(self, later):
        return dict(contender_cpu_s=round(later.cpu - self.cpu, 3),
                    engine_cpu_s=round(later.engine_cpu - self.engine_cpu, 3),
                    worker_metrics_requests=diff_counts(later.metrics, self.metrics),
                    window=[self.time, later.time], observed_s=round(later.time - self.time, 2),
                    peak_rss_kib_at_end=later.peak_rss_kib)


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


def run_contender(key, spec, engine, paths, args, workdir):
    log(f"=== {key}: {spec['label']}")
    engine.start(key)
    url = engine.url
    result = dict(key=key, label=spec["label"], argv=[os.path.relpath(a, REPO) if a.startswith(REPO) else a
                                                      for a in spec["argv"]],
                  loadavg_before=loadavg())
    n, stall = args.instances, args.stall_seconds
    try:
        dep = subprocess.run([paths["cw"], "deploy", "--engine-url", url, "--metrics-addr", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=120)
        if dep.returncode != 0:
            raise RuntimeError(f"deploy failed: {dep.stderr[-2000:]}")
        if args.warmup > 0:
            warm_up(engine, paths, args, workdir)
        base = finished_count(url)
        logfile = os.path.join(workdir, f"{key}.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        proc = spawn(spec["argv"], logfile)
        wait_polling(proc, engine.port, 120, key)
        time.sleep(1.0)

        # ---- throughput: N instances started (camunda-worker start --concurrency 16) while the contender runs
        p0 = Probe(proc, engine, spec)
        start_instances(paths, url, n, args.phase_timeout)
        t_started = time.time()
        finished, ok = wait_finished(url, base + n, args.phase_timeout, proc, stall)
        finished -= base
        p1 = Probe(proc, engine, spec)
        result["throughput_started_after"] = p0.time
        result["throughput"] = dict(all_finished=ok, finished=finished, start_phase_s=round(t_started - p0.time, 2),
                                    start_rate_per_s=round(n / (t_started - p0.time), 1), **p0.window(p1))
        log(f"{key}: {finished}/{n} finished in {p1.time - p0.time:.1f} s (starts took {t_started - p0.time:.1f} s); "
            f"contender CPU {p1.cpu - p0.cpu:.2f} s, engine CPU {p1.engine_cpu - p0.engine_cpu:.2f} s")
        done_so_far = base + finished

        # ---- paced: M instances at R/s, for the latency when the engine is not saturated
        if ok and args.paced_count > 0:
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
        if ok and args.backlog > 0:
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
        instances = history(url)
        stop_process(proc)
        if key == "ceiling":
            try:
                with open(logfile) as f:
                    lines = [ln for ln in f if ln.startswith("{")]
                result["ceiling_counters"] = json.loads(lines[-1]) if lines else None
            except (OSError, ValueError):
                pass
    finally:
        engine.stop()

    def started_at(i):
        return engine_date(i["startTime"]).timestamp()

    paced_set = [i for i in instances if (i.get("businessKey") or "").startswith("paced-")]
    cut = result.get("backlog_started_after", float("inf"))
    begin = result["throughput_started_after"]
    bulk = [i for i in instances
            if not (i.get("businessKey") or "").startswith("paced-") and begin <= started_at(i) < cut]
    backlog = [i for i in instances if not (i.get("businessKey") or "").startswith("paced-") and started_at(i) >= cut]
    result["throughput"].update(instance_stats(bulk))
    if "paced" in result:
        result["paced"].update(instance_stats(paced_set))
    if "backlog" in result:
        bl = result["backlog"]
        bl.update(instance_stats(backlog))
        ends = [engine_date(i["endTime"]).timestamp() for i in backlog if i.get("endTime")]
        if ends:
            drain = max(ends) - bl["resumed_at"]
            bl["drain_s"] = round(drain, 3)
            bl["drain_instances_per_s"] = round(len(ends) / drain, 2) if drain > 0 else None
    # Requests from the engine's access log (flushed when the engine stopped).
    for phase in ("throughput", "paced", "backlog"):
        if phase not in result:
            continue
        ph = result[phase]
        w0, w1 = ph["window"]
        got = engine.requests(w0, w1, "contender")
        if got is not None:
            counts, micros = got
            ph["engine_requests"] = counts
            ph["engine_request_micros_mean"] = {k: round(sum(v) / len(v)) for k, v in micros.items()}
            done = ph.get("completed") or 0
            ph["requests_per_instance"] = round(sum(counts.values()) / done, 3) if done else None
        if ph.get("completed"):
            ph["contender_cpu_ms_per_instance"] = round(ph["contender_cpu_s"] * 1000 / ph["completed"], 3)
            ph["engine_cpu_ms_per_instance"] = round(ph["engine_cpu_s"] * 1000 / ph["completed"], 3)
            ph["cpu_ratio_contender_to_engine"] = (round(ph["contender_cpu_s"] / ph["engine_cpu_s"], 4)
                                                   if ph["engine_cpu_s"] else None)
    t = result["throughput"]
    log(f"{key}: {t.get('instances_per_s')} instances/s, wall {t.get('wall_s')} s, "
        f"p50 {t.get('latency_ms', {}).get('p50')} ms, p99 {t.get('latency_ms', {}).get('p99')} ms, "
        f"req/instance {t.get('requests_per_instance')}, peak RSS {result['peak_rss_kib'] / 1024:.1f} MiB")
    if "paced" in result:
        p = result["paced"]
        log(f"{key}: paced p50 {p.get('latency_ms', {}).get('p50')} ms, p99 {p.get('latency_ms', {}).get('p99')} ms")
    if "backlog" in result:
        bl = result["backlog"]
        log(f"{key}: backlog drained at {bl.get('drain_instances_per_s')} instances/s, "
            f"contender CPU {bl['contender_cpu_s']:.2f} s, engine CPU {bl['engine_cpu_s']:.2f} s")
    return result


def run_idle(engine, paths, args, workdir, keys):
    log(f"=== idle: {', '.join(keys)} at once for {args.idle_seconds} s")
    engine.start("idle")
    result = dict(seconds=args.idle_seconds, contenders={}, loadavg_before=loadavg())
    procs = {}
    try:
        subprocess.run([paths["cw"], "deploy", "--engine-url", engine.url, "--metrics-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=120, check=True)
        specs = contenders(paths, engine.url, engine.port, args.metrics_port, 60)
        for key in keys:
            logfile = os.path.join(workdir, f"idle-{key}.log")
            if os.path.exists(logfile):
                os.remove(logfile)
            procs[key] = spawn(specs[key]["argv"], logfile)
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
    # Requests per contender, by User-Agent, from the access log.
    with open(engine.access_log, errors="replace") as f:
        lines = [ln.rstrip("\n").split("|", 5) for ln in f]
    minutes = (result["window"][1] - result["window"][0]) / 60
    for key, c in result["contenders"].items():
        reqs = {}
        for parts in lines:
            if len(parts) < 6 or not parts[5].startswith(c["ua"]):
                continue
            if not (result["window"][0] <= int(parts[0]) / 1000 <= result["window"][1]):
                continue
            ep = endpoint_of(parts[1], parts[2])
            reqs[ep] = reqs.get(ep, 0) + 1
        c["engine_requests"] = reqs
        c["requests_per_min"] = round(sum(reqs.values()) / minutes, 2)
        log(f"idle {key}: {c['requests_per_min']} req/min {reqs}, {c['core_percent']:.3f} % of a core, "
            f"RSS {c['rss_kib'] / 1024:.1f} MiB")
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
                     peak_rss_kib=rss)
            log(f"overhead --max-tasks {max_tasks}: {r['tasks_per_s']} tasks/s, {r['cpu_us_per_task']} µs CPU/task, "
                f"{r['tasks_per_cpu_s']} tasks per CPU-second, worker {r['worker_cores']} cores, "
                f"peak RSS {rss / 1024:.1f} MiB")
            results.append(r)
    finally:
        stop_process(fake)
    return results


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
    return dict(
        cores=os.cpu_count(), cpu_model=model, mem_gib=round(mem_kib / 1024 / 1024, 1),
        kernel=platform.release(),
        os=cmd_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        java=cmd_version(["java", "-version"]), maven=cmd_version(["mvn", "-v"]),
        python=platform.python_version(), node=cmd_version(["node", "--version"]),
        rust=cmd_version(["rustc", "--version"]),
        camunda_worker=cmd_version([paths["cw"], "--version"]),
        engine="Camunda 7.21.0 on Spring Boot 3.2 (engine/engine.sh), in-memory H2, history level full, "
               "JVM " + os.environ.get("ENGINE_JAVA_OPTS", "-Xms256m -Xmx1g -XX:+UseParallelGC"),
    )


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def summarize(res):
    """Markdown: results tables, idle, overhead, targets."""
    runs = res["runs"]

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    ceiling = get("ceiling", "throughput", "instances_per_s")
    ceiling_drain = get("ceiling", "backlog", "drain_instances_per_s")
    lines = []
    lines.append(f"Run of {res['started']}: fresh engine per contender, warmed with {res.get('warmup', 0)} instances "
                 f"(not counted); N = {res['instances']} instances started while the contender runs, "
                 f"then {res['paced_count']} paced at {res['paced_rate']:g}/s, then a backlog of {res['backlog']} "
                 f"drained; correlation delay 2 s; load average before the run {res['loadavg_start']}; "
                 f"whole run {res.get('total_seconds', 0) / 60:.1f} min. Absolute numbers are this machine's.")
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
            f"| {fmt(ratio * 100 if ratio is not None else None, 1)} % | {fmt(r.get('peak_rss_kib', 0) / 1024)} |")
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
    cw_metrics = [(k, runs[k]["throughput"].get("worker_metrics_requests")) for k in ("cw-default", "cw-tuned")
                  if k in runs and runs[k].get("throughput", {}).get("worker_metrics_requests")]
    if cw_metrics:
        lines.append("")
        lines.append("camunda-worker's own request counters in the same window: "
                     + "; ".join(f"{k}: {v}" for k, v in cw_metrics) + ".")
    if res.get("idle"):
        idle = res["idle"]
        lines.append("")
        lines.append(f"Idle ({idle['seconds']:g} s, no work, all at once on one engine):")
        lines.append("")
        lines.append("| contender | requests/min | by endpoint | CPU s | % of a core | RSS MiB |")
        lines.append("|---|---:|---|---:|---:|---:|")
        for key, c in idle["contenders"].items():
            by = ", ".join(f"{k} {v}" for k, v in c["engine_requests"].items()) or "none"
            lines.append(f"| {c['label']} | {fmt(c['requests_per_min'], 1)} | {by} | "
                         f"{fmt(c['cpu_s'], 3)} | {fmt(c['core_percent'], 3)} % | {fmt(c['rss_kib'] / 1024)} |")
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
    m = res["machine"]
    lines.append("")
    lines.append(f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_gib']:g} GiB RAM, {m['os']}, "
                 f"Linux {m['kernel']}; {m['java']}; {m['maven']}; Python {m['python']}; Node {m['node']}; "
                 f"{m['rust']}; {m['camunda_worker']}; engine: {m['engine']}.")
    lines.append("")
    lines.append("Targets (camunda-worker):")
    lines.append("")
    for name, ok, detail in targets(res):
        mark = "met" if ok else "missed"
        lines.append(f"- **{mark}**: {name}: {detail}")
    return "\n".join(lines) + "\n"


def targets(res):
    runs = res["runs"]

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    out = []
    for key in ("cw-default", "cw-tuned"):
        if key not in runs:
            continue
        for phase, field, what in (("throughput", "instances_per_s", "instances/s"),
                                   ("backlog", "drain_instances_per_s", "backlog drain instances/s")):
            ips, ceiling, py = get(key, phase, field), get("ceiling", phase, field), get("py-default", phase, field)
            if ips and ceiling:
                out.append((f"{key} {what} ≥ 0.9 × ceiling", ips >= 0.9 * ceiling,
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
    if "cw-tuned" in runs and runs["cw-tuned"].get("peak_rss_kib"):
        rss = runs["cw-tuned"]["peak_rss_kib"] / 1024
        out.append(("peak RSS ≤ 15 MiB with 64 in flight (cw-tuned, whole run on the real engine)", rss <= 15,
                    f"{rss:.1f} MiB"))
    if res.get("idle") and "cw-default" in res["idle"]["contenders"]:
        c = res["idle"]["contenders"]["cw-default"]
        by = ", ".join(f"{k} {v}" for k, v in c["engine_requests"].items())
        out.append(("idle ≤ 2 requests/min", c["requests_per_min"] <= 2, f"{c['requests_per_min']:.1f}/min ({by})"))
        out.append(("idle < 0.1 % of a core", c["core_percent"] < 0.1, f"{c['core_percent']:.3f} %"))
    return out


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in res["runs"].values() if r.get("throughput", {}).get("instances_per_s")]
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
    rss = [r.get("peak_rss_kib", 0) / 1024 for r in runs]
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


# ---------------------------------------------------------------- main


ALL = ["cw-default", "cw-tuned", "py-default", "py-tuned", "js", "java", "ceiling"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 instances, short idle/overhead phases")
    ap.add_argument("--only", default=",".join(ALL), help=f"contenders, comma-separated (of {','.join(ALL)})")
    ap.add_argument("--skip", default="", help="phases to skip: idle,overhead,throughput")
    ap.add_argument("--engine-port", type=int, default=18200)
    ap.add_argument("--fake-port", type=int, default=18201)
    ap.add_argument("--metrics-port", type=int, default=18202)
    ap.add_argument("--paced-rate", type=float, default=25.0)
    ap.add_argument("--paced-count", type=int, default=500)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--warmup", type=int, default=None,
                    help="instances run through each fresh engine (ceiling client, no delay) before measuring "
                         "(default 500, quick 100; 0 = none)")
    ap.add_argument("--backlog", type=int, default=None,
                    help="instances started while the contender is paused, then drained (default = --instances)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results, quick: bench/results/quick)")
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="only regenerate summary.md, chart.png (beside the JSON) and, for a full run, "
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
        summary = summarize(res)
        with open(os.path.join(out_dir, "summary.md"), "w") as f:
            f.write(summary)
        chart(res, os.path.join(out_dir, "chart.png"))
        if not res.get("quick") and out_dir == os.path.join(BENCH, "results"):
            update_benchmarks_md(summary)
        print(summary)
        return
    missing = [f"--{a.replace('_', '-')}" for a in ("cw_bin", "ceiling_bin", "fake_bin", "java_jar")
               if not getattr(args, a)]
    if missing:
        ap.error(f"{', '.join(missing)} required (bench/run.sh passes them)")
    if args.quick:
        if args.instances == 2000:
            args.instances = 200
        args.paced_count = min(args.paced_count, 100)
        args.idle_seconds = min(args.idle_seconds, 20)
    if args.backlog is None:
        args.backlog = args.instances
    if args.warmup is None:
        args.warmup = 100 if args.quick else 500
    args.stall_seconds = 30 if args.quick else 60
    args.idle_settle = 5 if args.quick else 15
    args.overhead_warmup = 2 if args.quick else 3
    args.overhead_seconds = 5 if args.quick else 15
    args.phase_timeout = 120 + args.instances * 0.5
    out_dir = args.out or os.path.join(BENCH, "results", "quick" if args.quick else "")
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
        ap.error(f"unknown contenders {unknown}")
    skip = set(s.strip() for s in args.skip.split(",") if s.strip())

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    engine = Engine(args.engine_port, workdir)
    t_begin = time.time()
    res = dict(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), instances=args.instances, quick=args.quick,
               backlog=args.backlog, warmup=args.warmup,
               paced_rate=args.paced_rate, paced_count=args.paced_count, loadavg_start=loadavg(),
               machine=machine_facts(paths), runs={}, idle=None, overhead=None,
               command=os.environ.get("BENCH_COMMAND", " ".join(["bench/bench.py"] + sys.argv[1:])))
    try:
        if "throughput" not in skip:
            limit = int(args.phase_timeout * 2 + 300)
            for key in keys:
                spec = contenders(paths, engine.url, engine.port, args.metrics_port, limit)[key]
                try:
                    res["runs"][key] = run_contender(key, spec, engine, paths, args, workdir)
                except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                    log(f"{key} failed: {e}")
                    res["runs"][key] = dict(key=key, label=spec["label"], error=str(e), throughput={})
        if "idle" not in skip:
            idle_keys = [k for k in ["cw-default", "py-default", "js", "java"] if k in keys] or ["cw-default"]
            res["idle"] = run_idle(engine, paths, args, workdir, idle_keys)
        if "overhead" not in skip:
            res["overhead"] = run_overhead(paths, args, workdir)
    finally:
        cleanup()
        engine.stop()
    res["total_seconds"] = round(time.time() - t_begin, 1)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    summary = summarize(res)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    chart(res, os.path.join(out_dir, "chart.png"))
    if not args.quick and args.out is None and set(keys) == set(ALL) and not skip:
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
