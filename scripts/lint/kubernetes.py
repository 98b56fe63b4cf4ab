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
  - Secret and ConfigMap references resolve, and CAMUNDA_WORKER_CONFIG points at the mounted
    worker.toml;
  - the PodDisruptionBudget selects the Deployment's pods.

Usage: kubernetes.py K8S_DIR KUSTOMIZE_BUILD_OUTPUT WORKER_TOML  (run by scripts/lint-deploy.sh)
"""

import os
import sys

import yaml

from common import Problems, option_names, read_worker_toml, seconds

ENV_PREFIX = "CAMUNDA_WORKER_"


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


def reference_problems(docs, pod, c, env, problems):
    """Secret name/keys, ConfigMap name/key, and the config path inside the mount resolve."""
    need = problems.need
    secret = docs["Secret"][0][1]
    for name, e in env.items():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            need(
                ref["name"] == secret["metadata"]["name"],
                f"{name}: Secret {ref['name']} not defined",
            )
            need(
                ref["key"] in secret.get("stringData", {}),
                f"{name}: key {ref['key']} not in the Secret",
            )
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


def main():
    k8s_dir, rendered, toml_path = sys.argv[1], sys.argv[2], sys.argv[3]
    docs = load_docs(rendered)
    problems = Problems()
    kustomization_problems(k8s_dir, toml_path, problems)

    dep = docs["Deployment"][0][1]
    toml_text, toml = read_worker_toml(toml_path)
    pod, c, env = container_problems(dep, toml_text, toml, problems)
    reference_problems(docs, pod, c, env, problems)

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
