"""Checks that the manifests in deploy/kubernetes/ are consistent with each other and the worker.

kubeconform and kubernetes-validate prove each manifest is schema-valid; this checks what a schema
cannot: that the pieces fit together and match how the worker behaves. It reads what
`kustomize build` renders, so the ConfigMap config/kustomization.yaml generates is in.
  - kustomization.yaml lists exactly the manifest files of the directory, and the directory of
    worker.toml (whose kustomization generates the ConfigMap);
  - the Deployment: 2 replicas, a termination grace period longer than the worker's shutdown grace,
    one worker id per replica (from metadata.name), the metrics port 9464, /healthz and /readyz
    probes, a locked-down securityContext, resource requests and limits;
  - every CAMUNDA_WORKER_* variable names a real option of config/worker.toml;
  - no Secret is committed (not even with placeholder values: it is created out of band), and
    every secret value reaches the worker as a mounted file: no CAMUNDA_WORKER_PASSWORD,
    _BEARER_TOKEN or _OAUTH_CLIENT_SECRET variable, and each *_FILE variable names a file that a
    mounted Secret volume provides;
  - the ConfigMap reference resolves, and CAMUNDA_WORKER_CONFIG points at the mounted worker.toml;
  - the PodDisruptionBudget selects the Deployment's pods;
  - a NetworkPolicy selects the Deployment's pods and admits ingress on the metrics port only.

Usage: kubernetes.py K8S_DIR KUSTOMIZE_BUILD_OUTPUT WORKER_TOML  (run by scripts/lint-deploy.sh)
"""

import os
import sys

import yaml

from common import Problems, option_names, read_worker_toml, seconds

ENV_PREFIX = "CAMUNDA_WORKER_"

# Options whose value is a secret: never an environment variable, always their *_FILE form.
SECRET_OPTIONS = ("PASSWORD", "BEARER_TOKEN", "OAUTH_CLIENT_SECRET")


def load_docs(rendered):
    """{kind: [(kind/name, document), ...]} of every document `kustomize build` rendered."""
    docs = {}
    with open(rendered, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                label = f"{doc['kind']}/{doc['metadata']['name']}"
                docs.setdefault(doc["kind"], []).append((label, doc))
    return docs


def kustomization_problems(k8s_dir, toml_path, problems):
    """The kustomization takes in every manifest file, and worker.toml's directory."""
    with open(os.path.join(k8s_dir, "kustomization.yaml"), encoding="utf-8") as f:
        kust = yaml.safe_load(f)
    resources = kust.get("resources", [])
    dirs = [r for r in resources if os.path.isdir(os.path.join(k8s_dir, r))]
    listed = set(resources) - set(dirs)
    files = {n for n in os.listdir(k8s_dir) if n.endswith(".yaml") and n != "kustomization.yaml"}
    problems.need(
        listed == files,
        f"kustomization resources {sorted(listed)} != files {sorted(files)}",
    )
    config_dir = os.path.realpath(os.path.dirname(toml_path))
    problems.need(
        [os.path.realpath(os.path.join(k8s_dir, d)) for d in dirs] == [config_dir],
        f"kustomization should take in {config_dir} (the ConfigMap's generator), not {dirs}",
    )


def container_problems(dep, toml_text, toml, problems):
    need = problems.need
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}

    grace = seconds(
        env.get("CAMUNDA_WORKER_SHUTDOWN_GRACE", {}).get("value") or toml["shutdown_grace"]
    )
    need(dep["spec"]["replicas"] == 2, "Deployment: replicas should be 2")
    need(
        pod.get("terminationGracePeriodSeconds", 30) > grace,
        f"terminationGracePeriodSeconds must exceed the shutdown grace ({grace:g}s)",
    )
    wid = env.get("CAMUNDA_WORKER_WORKER_ID", {})
    need(
        wid.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        "CAMUNDA_WORKER_WORKER_ID must come from metadata.name (one id per replica)",
    )
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    need(ports.get("metrics") == 9464, "container port 9464 must be named metrics")
    need(
        c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
        "livenessProbe must GET /healthz",
    )
    need(
        c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
        "readinessProbe must GET /readyz",
    )
    sc = c.get("securityContext", {})
    need(
        sc.get("readOnlyRootFilesystem") is True
        and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities", {}).get("drop") == ["ALL"],
        "container securityContext not locked down",
    )
    need(
        (pod.get("securityContext", {}).get("runAsNonRoot") or sc.get("runAsNonRoot")) is True,
        "runAsNonRoot missing",
    )
    need(
        "limits" in c.get("resources", {}) and "requests" in c.get("resources", {}),
        "resources requests/limits missing",
    )

    # Every CAMUNDA_WORKER_* variable must name a real option.
    options = option_names(toml_text, toml)
    for name in env:
        if name.startswith(ENV_PREFIX):
            need(name[len(ENV_PREFIX) :].lower() in options, f"{name}: no such option")
    return pod, c, env


def secret_problems(docs, pod, c, env, problems):
    """No committed Secret; secrets only as files of a mounted Secret volume."""
    need = problems.need
    need(
        not docs.get("Secret"),
        "a Secret is committed: create it out of band (kubectl create secret generic ...)",
    )
    for option in SECRET_OPTIONS:
        need(
            ENV_PREFIX + option not in env,
            f"{ENV_PREFIX}{option}: a secret in the environment; use {ENV_PREFIX}{option}_FILE",
        )
    secret_volumes = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    mounted_files = set()
    for m in c.get("volumeMounts", []):
        vol = secret_volumes.get(m["name"])
        if vol is None:
            continue
        need(m.get("readOnly") is True, f"volume {m['name']}: mount it readOnly")
        paths = [item["path"] for item in vol.get("items", [])]
        need(paths, f"volume {m['name']}: list the Secret's keys it mounts (items)")
        mounted_files |= {os.path.join(m["mountPath"], p) for p in paths}
    for option in SECRET_OPTIONS:
        name = f"{ENV_PREFIX}{option}_FILE"
        if name in env:
            need(
                env[name].get("value") in mounted_files,
                f"{name}: {env[name].get('value')!r} is no file of a mounted Secret volume",
            )
    need(
        f"{ENV_PREFIX}PASSWORD_FILE" in env,
        f"{ENV_PREFIX}PASSWORD_FILE missing: the Deployment shows how credentials are mounted",
    )


def config_map_problems(docs, pod, c, env, problems):
    """The ConfigMap name/key and the config path inside the mount resolve."""
    need = problems.need
    cm = docs["ConfigMap"][0][1]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    cfg_path = env.get("CAMUNDA_WORKER_CONFIG", {}).get("value", "")
    found = False
    for vname, v in vols.items():
        if v.get("configMap", {}).get("name") == cm["metadata"]["name"] and vname in mounts:
            found = (
                cfg_path == os.path.join(mounts[vname]["mountPath"], "worker.toml")
                and "worker.toml" in cm["data"]
            )
    need(found, "CAMUNDA_WORKER_CONFIG must point at worker.toml of the mounted ConfigMap")


def network_policy_problems(docs, dep, c, problems):
    """One NetworkPolicy for the worker's pods: ingress on the metrics port only."""
    need = problems.need
    policies = docs.get("NetworkPolicy", [])
    need(len(policies) == 1, f"one NetworkPolicy expected, found {len(policies)}")
    if len(policies) != 1:
        return
    name, policy = policies[0]
    spec = policy["spec"]
    need(
        spec.get("podSelector", {}).get("matchLabels") == dep["spec"]["selector"]["matchLabels"],
        f"{name}: podSelector differs from the Deployment's selector",
    )
    need("Ingress" in spec.get("policyTypes", []), f"{name}: policyTypes must include Ingress")
    metrics_port = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}.get("metrics")
    ports = [p for rule in spec.get("ingress", []) for p in rule.get("ports") or [None]]
    need(ports, f"{name}: no ingress rule (the metrics port must stay reachable)")
    for p in ports:
        need(
            p is not None
            and p.get("port") in ("metrics", metrics_port)
            and p.get("protocol", "TCP") == "TCP",
            f"{name}: ingress must name the metrics port only, found {p}",
        )


def main():
    k8s_dir, rendered, toml_path = sys.argv[1], sys.argv[2], sys.argv[3]
    docs = load_docs(rendered)
    problems = Problems()
    kustomization_problems(k8s_dir, toml_path, problems)

    dep = docs["Deployment"][0][1]
    toml_text, toml = read_worker_toml(toml_path)
    pod, c, env = container_problems(dep, toml_text, toml, problems)
    secret_problems(docs, pod, c, env, problems)
    config_map_problems(docs, pod, c, env, problems)
    network_policy_problems(docs, dep, c, problems)

    sel = dep["spec"]["selector"]["matchLabels"]
    for kind in ("PodDisruptionBudget",):
        for name, doc in docs.get(kind, []):
            problems.need(
                doc["spec"]["selector"]["matchLabels"] == sel,
                f"{name}: selector differs from the Deployment's",
            )

    problems.finish(f"ok: {sum(len(v) for v in docs.values())} documents consistent")


if __name__ == "__main__":
    main()
