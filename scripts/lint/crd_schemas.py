"""Turns CustomResourceDefinitions into strict JSON schemas that kubeconform reads.

Each served version of each CRD becomes OUT/<group>/<kind lowercased>_<version>.json: its
openAPIV3Schema, with `additionalProperties: false` on every object that lists its properties
(unless it keeps unknown fields, x-kubernetes-preserve-unknown-fields) so that a misspelled field is
an error, as kubeconform -strict makes it for the built-in kinds, and with the Kubernetes-only
int-or-string fields accepting either.

Usage: crd_schemas.py OUT CRD_YAML...  (run by scripts/lint-deploy.sh with the tool venv)
"""

import json
import os
import sys

import yaml


def strict(node):
    """The JSON schema of an openAPIV3Schema node."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out.pop("nullable")
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
    return out


def main():
    out_root, crds = sys.argv[1], sys.argv[2:]
    written = 0
    for path in crds:
        with open(path, encoding="utf-8") as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # apiVersion, kind and metadata are the API server's; metadata's fields are free here.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            directory = os.path.join(out_root, group)
            os.makedirs(directory, exist_ok=True)
            name = f"{kind}_{version['name']}.json"
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                json.dump(schema, f)
            written += 1
    if not written:
        sys.exit("no CRD schema written")
    print(f"ok: {written} schema(s) from {len(crds)} CRD(s)")


if __name__ == "__main__":
    main()
