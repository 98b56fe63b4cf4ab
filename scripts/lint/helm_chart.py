"""Checks the Helm chart (deploy/helm/camunda-worker) against the kustomize files and the worker.

The schemas (kubeconform, and the Prometheus Operator's CRDs) prove each rendered object is valid;
this checks what they cannot:
  - drift: the chart at its default values, released as "camunda-worker", installs the objects
    `kustomize build deploy/kubernetes` renders, field for field, once the labels only Helm sets
    (helm.sh/chart, app.kubernetes.io/instance, version, managed-by) and the config checksum
    annotation are left out. The kustomize files are the reference: change both, or this fails;
  - files: the chart's copies of worker.toml, the alert rules and the dashboard are byte for byte
    the files they copy (a chart cannot read files outside its directory);
  - contract, for every value set rendered: no Secret; no secret in a variable (their *_FILE forms
    only, each naming a file of a mounted Secret volume); every CAMUNDA_WORKER_* variable a real
    option; a worker id per pod; worker.toml in the ConfigMap is TOML of the worker's options and
    is where CAMUNDA_WORKER_CONFIG points; the pods' termination grace outlasts the worker's
    shutdown grace; the PodDisruptionBudget and NetworkPolicy select the workers (the
    policy admitting the metrics port only); a ServiceMonitor reaches the workers through its
    Service; a PrometheusRule holds the shipped alert groups and the dashboard ConfigMap the
    shipped dashboard;
  - rules: writes a PrometheusRule's groups as a rule file, for promtool;
  - worker: the worker binary itself starts far enough to print its configuration from a rendered
    Deployment's variables and its ConfigMap's worker.toml (the refusals of a real start-up).

Usage:
  helm_chart.py drift KUSTOMIZE_BUILD_OUTPUT HELM_TEMPLATE_OUTPUT
  helm_chart.py files CHART_DIR ROOT
  helm_chart.py contract HELM_TEMPLATE_OUTPUT WORKER_TOML ALERTS_YAML DASHBOARD_JSON
  helm_chart.py rules HELM_TEMPLATE_OUTPUT OUT_FILE
  helm_chart.py worker HELM_TEMPLATE_OUTPUT CAMUNDA_WORKER_BINARY SCRATCH_DIR
(run by scripts/lint-deploy.sh)
"""

import difflib
import filecmp
import json
import os
import subprocess
import sys
import tomllib

import yaml

from common import Problems, option_names, read_worker_toml, seconds
from kubernetes import ENV_PREFIX, SECRET_OPTIONS, network_policy_problems

# Labels the chart sets and kustomize does not: they tell releases apart.
HELM_ONLY_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
HELM_ONLY_ANNOTATIONS = {"checksum/config"}

# The chart's copies (under files/) and what each copies, relative to the repository.
COPIES = {
    "files/worker.toml": "config/worker.toml",
    "files/alerts.yaml": "deploy/prometheus/alerts.yaml",
    "files/camunda-worker.json": "deploy/grafana/camunda-worker.json",
}


def load(rendered):
    """{(kind, name): document} of every document in a rendered file."""
    docs = {}
    with open(rendered, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def without_helm_only(value):
    """`value` with the Helm-only labels and annotations left out, wherever they are."""
    if isinstance(value, dict):
        return {
            k: without_helm_only(v)
            for k, v in value.items()
            if k not in HELM_ONLY_LABELS and k not in HELM_ONLY_ANNOTATIONS
        }
    if isinstance(value, list):
        return [without_helm_only(v) for v in value]
    return value


def drift(kustomized, rendered):
    problems = Problems()
    want, got = load(kustomized), load(rendered)
    problems.need(
        set(want) == set(got),
        f"objects differ: only kustomize {sorted(set(want) - set(got))}, "
        f"only the chart {sorted(set(got) - set(want))}",
    )
    for key in sorted(set(want) & set(got)):
        a = yaml.safe_dump(without_helm_only(want[key]), sort_keys=True).splitlines()
        b = yaml.safe_dump(without_helm_only(got[key]), sort_keys=True).splitlines()
        if a != b:
            diff = "\n".join(difflib.unified_diff(a, b, "kustomize", "chart", lineterm="", n=2))
            problems.need(False, f"{key[0]}/{key[1]} differs:\n{diff}")
    problems.finish(f"ok: the chart's defaults install the same {len(want)} objects as kustomize")


def files(chart, root):
    problems = Problems()
    for copy, source in COPIES.items():
        problems.need(
            filecmp.cmp(os.path.join(chart, copy), os.path.join(root, source), shallow=False),
            f"{copy} differs from {source}: cp {source} deploy/helm/camunda-worker/{copy}",
        )
    problems.finish(f"ok: {len(COPIES)} copies identical")


def only(docs, kind):
    return [doc for (k, _), doc in docs.items() if k == kind]


def mounted_secret_files(pod, container):
    """The paths of every file a mounted Secret volume provides; a problem per loose mount."""
    volumes = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    paths, loose = set(), []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            continue
        if mount.get("readOnly") is not True:
            loose.append(f"volume {mount['name']}: mount it readOnly")
        items = [item["path"] for item in volume.get("items", [])]
        if not items:
            loose.append(f"volume {mount['name']}: list the Secret's keys it mounts (items)")
        paths |= {os.path.join(mount["mountPath"], p) for p in items}
    return paths, loose


def worker_problems(docs, dep, toml_text, toml, problems):
    need = problems.need
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    need(not only(docs, "Secret"), "the chart renders a Secret: secrets are created out of band")
    options = option_names(toml_text, toml)
    for name in env:
        if name.startswith(ENV_PREFIX):
            need(name[len(ENV_PREFIX) :].lower() in options, f"{name}: no such option")
    files, loose = mounted_secret_files(pod, c)
    for problem in loose:
        need(False, problem)
    for option in SECRET_OPTIONS:
        need(ENV_PREFIX + option not in env, f"{ENV_PREFIX}{option}: a secret in the environment")
        path = env.get(f"{ENV_PREFIX}{option}_FILE", {}).get("value")
        need(path is None or path in files, f"{option}_FILE {path!r}: no file of a mounted Secret")
    worker_id = env.get(f"{ENV_PREFIX}WORKER_ID", {}).get("valueFrom", {})
    need(
        worker_id.get("fieldRef", {}).get("fieldPath") == "metadata.name",
        "CAMUNDA_WORKER_WORKER_ID must come from metadata.name (one id per replica)",
    )
    return pod, c, env


def config_problems(docs, pod, c, env, options, shipped, problems):
    """CAMUNDA_WORKER_CONFIG is worker.toml of the mounted ConfigMap; that is TOML of the worker's
    options only (the worker refuses an unknown key); the pods' grace outlasts the worker's."""
    maps = {doc["metadata"]["name"]: doc for doc in only(docs, "ConfigMap")}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    path = env.get(f"{ENV_PREFIX}CONFIG", {}).get("value", "")
    for volume in pod.get("volumes", []):
        cm = maps.get(volume.get("configMap", {}).get("name"))
        mount = mounts.get(volume["name"])
        if cm and mount and path == os.path.join(mount, "worker.toml"):
            name = cm["metadata"]["name"]
            try:
                config = tomllib.loads(cm["data"]["worker.toml"])
            except (KeyError, tomllib.TOMLDecodeError) as e:
                problems.need(False, f"ConfigMap {name}: worker.toml: {e}")
                return
            for key in config:
                problems.need(key in options | {"route"}, f"ConfigMap {name}: no option {key!r}")
            grace = seconds(
                env.get(f"{ENV_PREFIX}SHUTDOWN_GRACE", {}).get("value")
                or config.get("shutdown_grace")
                or shipped["shutdown_grace"]
            )
            problems.need(
                pod.get("terminationGracePeriodSeconds", 30) > grace,
                f"terminationGracePeriodSeconds must exceed the shutdown grace ({grace:g}s)",
            )
            return
    problems.need(False, "CAMUNDA_WORKER_CONFIG must point at worker.toml of a mounted ConfigMap")


def monitoring_problems(docs, dep, alerts_path, dashboard_path, problems):
    need = problems.need
    selector = dep["spec"]["selector"]["matchLabels"]
    services = only(docs, "Service")
    for monitor in only(docs, "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if wanted.items() <= s["metadata"].get("labels", {}).items()]
        need(len(matched) == 1, f"ServiceMonitor selects {len(matched)} Services, not 1")
        for service in matched:
            need(service["spec"]["selector"] == selector, "the metrics Service misses the workers")
            ports = {p["name"] for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                need(endpoint["port"] in ports, f"ServiceMonitor port {endpoint['port']}: none")
    with open(alerts_path, encoding="utf-8") as f:
        shipped = yaml.safe_load(f)["groups"]
    for rule in only(docs, "PrometheusRule"):
        need(rule["spec"]["groups"] == shipped, "PrometheusRule differs from the shipped alerts")
    with open(dashboard_path, encoding="utf-8") as f:
        dashboard = json.load(f)
    for cm in only(docs, "ConfigMap"):
        if "camunda-worker.json" in cm.get("data", {}):
            need(
                json.loads(cm["data"]["camunda-worker.json"]) == dashboard,
                "the dashboard ConfigMap differs from the shipped dashboard",
            )


def contract(rendered, toml_path, alerts_path, dashboard_path):
    docs = load(rendered)
    problems = Problems()
    deployments = only(docs, "Deployment")
    problems.need(len(deployments) == 1, f"one Deployment expected, found {len(deployments)}")
    dep = deployments[0]
    toml_text, toml = read_worker_toml(toml_path)
    pod, c, env = worker_problems(docs, dep, toml_text, toml, problems)
    config_problems(docs, pod, c, env, option_names(toml_text, toml), toml, problems)
    selector = dep["spec"]["selector"]["matchLabels"]
    for pdb in only(docs, "PodDisruptionBudget"):
        problems.need(pdb["spec"]["selector"]["matchLabels"] == selector, "PDB misses the workers")
    if only(docs, "NetworkPolicy"):
        by_kind = {}
        for (kind, name), doc in docs.items():
            by_kind.setdefault(kind, []).append((f"{kind}/{name}", doc))
        network_policy_problems(by_kind, dep, c, problems)
    monitoring_problems(docs, dep, alerts_path, dashboard_path, problems)
    problems.finish(f"ok: {len(docs)} objects consistent")


def rules(rendered, out):
    groups = [rule["spec"]["groups"] for rule in only(load(rendered), "PrometheusRule")]
    if len(groups) != 1:
        sys.exit(f"one PrometheusRule expected, found {len(groups)}")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": groups[0]}, f, sort_keys=False)
    print(f"ok: {len(groups[0])} group(s) written")


def worker_accepts(rendered, binary, scratch):
    """The worker itself reads the rendered Deployment's variables and ConfigMap's worker.toml
    (`camunda-worker --print-config`, nothing contacted): the secrets' files stand in scratch."""
    docs = load(rendered)
    dep = only(docs, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    maps = {doc["metadata"]["name"]: doc for doc in only(docs, "ConfigMap")}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    # Where each mounted file lands in scratch, by its path in the pod.
    moved = {}
    for volume in pod.get("volumes", []):
        mount = mounts.get(volume["name"])
        if mount and "configMap" in volume:
            for key, text in maps[volume["configMap"]["name"]]["data"].items():
                moved[os.path.join(mount, key)] = (os.path.join(scratch, key), text)
        elif mount and "secret" in volume:
            for item in volume["secret"].get("items", []):
                local = os.path.join(scratch, f"secret-{item['path']}")
                moved[os.path.join(mount, item["path"])] = (local, "not-a-real-secret")
    for local, text in moved.values():
        with open(os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = moved.get(var["value"], (var["value"],))[0]
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = f"{dep['metadata']['name']}-pod-0"
        else:
            env[var["name"]] = "from-a-secret"
    done = subprocess.run(
        [binary, "--print-config"], env=env, capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        sys.exit(f"the worker refuses {rendered}: {done.stderr.strip()}")
    print(f"ok: the worker reads its {len(c.get('env', []))} variables and worker.toml")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    {
        "drift": drift,
        "files": files,
        "contract": contract,
        "rules": rules,
        "worker": worker_accepts,
    }[command](*args)


if __name__ == "__main__":
    main()
