"""Writes deploy/kubernetes/configmap.yaml from config/worker.toml.

The ConfigMap embeds worker.toml verbatim in a YAML block scalar, because kustomize cannot read
files outside its directory. configmap_check.py verifies the embedded copy byte for byte, so the
block scalar's chomping and indentation indicators are chosen here to round-trip the file exactly.

Usage: configmap_sync.py WORKER_TOML CONFIGMAP_YAML
(run by `scripts/lint-deploy.sh --sync-configmap`; standard library only, as it runs on the
system python3 before the tool venv exists)
"""

import sys

HEADER = (
    "# GENERATED from config/worker.toml by `scripts/lint-deploy.sh --sync-configmap`: edit that\n"
    "# file, not this one. scripts/lint-deploy.sh fails when the two differ.\n"
    "apiVersion: v1\n"
    "kind: ConfigMap\n"
    "metadata:\n"
    "  name: camunda-worker-config\n"
    "  labels:\n"
    "    app.kubernetes.io/name: camunda-worker\n"
    "data:\n"
)


def render(text, src):
    """The ConfigMap document embedding text (the contents of src)."""
    if "\r" in text or "\t" in text:
        sys.exit(
            f"{src}: tabs or carriage returns cannot be embedded verbatim in a YAML block scalar"
        )
    if text.endswith("\n\n"):
        chomp = "+"
    elif text.endswith("\n"):
        chomp = ""
    else:
        chomp = "-"
    indent_indicator = "4" if text[:1] == " " else ""
    body = "".join(
        ("    " + line) if line.strip() else "\n" for line in text.splitlines(keepends=True)
    )
    if not body.endswith("\n"):
        body += "\n"
    return f"{HEADER}  worker.toml: |{indent_indicator}{chomp}\n{body}"


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8", newline="") as f:
        text = f.read()
    out = render(text, src)
    with open(dst, "w", encoding="utf-8", newline="") as f:
        f.write(out)


if __name__ == "__main__":
    main()
