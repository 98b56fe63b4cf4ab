"""Checks that deploy/kubernetes/configmap.yaml embeds config/worker.toml byte for byte.

The ConfigMap is generated from worker.toml (configmap_sync.py, via
`scripts/lint-deploy.sh --sync-configmap`); this fails, with a unified diff, when someone edits one
of the two without regenerating, so the Kubernetes deployment cannot run with a stale config.

Usage: configmap_check.py WORKER_TOML CONFIGMAP_YAML  (run by scripts/lint-deploy.sh)
"""

import difflib
import sys

import yaml


def main():
    toml_path, cm_path = sys.argv[1], sys.argv[2]
    with open(toml_path, "rb") as f:
        expected = f.read()
    with open(cm_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    embedded = (doc.get("data") or {}).get("worker.toml")
    if not isinstance(embedded, str):
        sys.exit(f"{cm_path}: data.worker.toml missing")
    if embedded.encode("utf-8") != expected:
        sys.stdout.writelines(
            difflib.unified_diff(
                expected.decode("utf-8").splitlines(keepends=True),
                embedded.splitlines(keepends=True),
                "config/worker.toml",
                "configmap.yaml data.worker.toml",
            )
        )
        sys.exit("embedded worker.toml differs; run scripts/lint-deploy.sh --sync-configmap")
    print(f"ok: {len(expected)} bytes identical")


if __name__ == "__main__":
    main()
