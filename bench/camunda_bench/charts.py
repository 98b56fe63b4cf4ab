"""The charts beside summary.md: chart.png (throughput, backlog drain, CPU per instance and peak RSS
per contender on one engine) and cluster.png (pickup latency and throughput on the cluster).

matplotlib is imported only when a chart is drawn, so the rest of the driver does not need it."""


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
                            (a3, "pickup_sparse", (f"{cl.get('sparse_count')} instances, one every "
                                                   f"{cl.get('sparse_interval_s', 0):g} s"))):
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
