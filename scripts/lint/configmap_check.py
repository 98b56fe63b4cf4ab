"""Checks that the ConfigMap `kustomize build deploy/kubernetes` renders holds config/worker.toml.

config/kustomization.yaml generates the ConfigMap from worker.toml itself, so there is no copy to
keep in step; this proves that what `kubectl apply -k deploy/kubernetes` applies is that file,
byte for byte, under the name and key the Deployment mounts (a generator option or a layout
change could otherwise rename it, or render something else).

Usage: configmap_check.py WORKER_TOML KUSTOMIZE_BUILD_OUTPUT  (run by scripts/lint-deploy.sh)
"""

import difflib
import sys

import yaml

NAME = "camunda-worker-config"


def main():
    toml_path, rendered_path = sys.argv[1], sys.argv[2]
    with open(toml_path, "rb") as f:
        expected = f.read()
    with open(rendered_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    maps = [d for d in docs if d.get("kind") == "ConfigMap"]
    names = [m["metadata"]["name"] for m in maps]
    if names != [NAME]:
        sys.exit(f"{rendered_path}: ConfigMaps {names}, expected exactly [{NAME!r}]")
    embedded = (maps[0].get("data") or {}).get("worker.toml")
    if not isinstance(embedded, str):
        sys.exit(f"{rendered_path}: data.worker.toml missing")
    if embedded.encode("utf-8") != expected:
        sys.stdout.writelines(
            difflib.unified_diff(
                expected.decode("utf-8").splitlines(keepends=True),
                embedded.splitlines(keepends=True),
                "config/worker.toml",
                "rendered ConfigMap data.worker.toml",
            )
        )
        sys.exit("the rendered ConfigMap's worker.toml differs from config/worker.toml")
    print(f"ok: {NAME} holds config/worker.toml, {len(expected)} bytes identical")


if __name__ == "__main__":
    main()
