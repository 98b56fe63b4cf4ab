"""Numbers derived from what was measured: percentiles and latency distributions of instances from
the engine's history, pickup latency from its external-task log, CPU per instance of each phase, and
the requests per instance from the access logs once an engine has flushed them.

Apart from the phases so that the same arithmetic serves the single engine and the cluster."""

import urllib.parse

from .common import DELAY_S, log
from .engines import engine_date, history, http_json, is_special


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def distribution(values_ms):
    return {"p50": round(percentile(values_ms, 0.5), 1), "p90": round(percentile(values_ms, 0.9), 1),
            "p99": round(percentile(values_ms, 0.99), 1), "max": round(max(values_ms), 1),
            "min": round(min(values_ms), 1)}


def instance_stats(instances, delay_s=DELAY_S):
    """Wall time, rate and latency (end − start − `delay_s`, the message's own delay) of the
    finished `instances`."""
    done = [i for i in instances if i.get("endTime") and i.get("state") == "COMPLETED"]
    if not done:
        return {"completed": 0}
    starts = [engine_date(i["startTime"]) for i in done]
    ends = [engine_date(i["endTime"]) for i in done]
    lat_ms = [((e - s).total_seconds() - delay_s) * 1000 for s, e in zip(starts, ends)]
    wall = (max(ends) - min(starts)).total_seconds()
    return {
        "completed": len(done),
        "wall_s": round(wall, 3),
        "instances_per_s": round(len(done) / wall, 2) if wall > 0 else None,
        "latency_ms": distribution(lat_ms),
    }


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
    out = {"instances": len(instances), "measured": len(values), "missing": missing}
    if values:
        out["pickup_ms"] = distribution(values)
        out["pickup_ms"]["mean"] = round(sum(values) / len(values), 1)
        out["over_1s"] = sum(1 for v in values if v > 1000)
        out["over_10s"] = sum(1 for v in values if v > 10000)
    return out


def finish_stats(result, instances, delay_s=DELAY_S):
    """Instance statistics (from the engine's history) and CPU per instance of each phase; `delay_s`:
    the wait the process itself holds each instance (the correlation delay; 0 without a message)."""
    def started_at(i):
        return engine_date(i["startTime"]).timestamp()

    paced_set = [i for i in instances if (i.get("businessKey") or "").startswith("paced-")]
    cut = result.get("backlog_started_after", float("inf"))
    if "throughput" in result:
        begin = result["throughput_started_after"]
        bulk = [i for i in instances if not is_special(i) and begin <= started_at(i) < cut]
        result["throughput"].update(instance_stats(bulk, delay_s))
    if "paced" in result:
        result["paced"].update(instance_stats(paced_set, delay_s))
    if "backlog" in result:
        bl = result["backlog"]
        backlog = [i for i in instances if not is_special(i) and started_at(i) >= cut]
        bl.update(instance_stats(backlog, delay_s))
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
