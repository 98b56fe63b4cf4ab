"""What the driver measures on this machine while a contender runs: CPU, memory and connections of a
process tree from /proc, camunda-worker's own Prometheus counters, the requests in the engines' Tomcat
access logs (by endpoint, and by who sent them), and `Probe`, one sample of all of it for a window.

Nothing here starts or stops anything: it only reads, so the phases can sample at any point."""

import os
import re
import time
import urllib.request

from .common import DRIVER_UA

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    if agent.startswith((DRIVER_UA, "curl")):
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
        out = {"contender_cpu_s": round(later.cpu - self.cpu, 3),
               # the engine with its database: the JVM(s), plus PostgreSQL on the cluster
               "engine_cpu_s": round(parts.get("jvm", 0.0) + parts.get("postgres", 0.0), 3),
               "worker_metrics_requests": diff_counts(later.metrics, self.metrics),
               "window": [self.time, later.time], "observed_s": round(later.time - self.time, 2),
               "peak_rss_kib_at_end": later.peak_rss_kib}
        if len(parts) > 1:
            out["engine_cpu_parts_s"] = parts
        return out
