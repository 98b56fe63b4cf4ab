# shellcheck shell=bash
# Shared by engine/engine.sh (one engine) and engine/cluster.sh (PostgreSQL + N engine nodes +
# HAProxy): where the engine lives and which jar a flavor is, the Maven build of that jar, the log
# lines, and the process and port helpers both need. Sourced, never run; the sourcing script has
# set -euo pipefail already.
#
# Both scripts log as "engine.sh:": the cluster is engine.sh's `cluster` sub-command to its
# callers, and the tests and the docs know its messages by that name.

ENGINE_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
RUN_DIR="$ENGINE_DIR/.run"
ENGINE_FLAVOR=${ENGINE_FLAVOR:-camunda-7.21}
ENGINE_START_TIMEOUT=${ENGINE_START_TIMEOUT:-240}

log() { printf 'engine.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$ENGINE_FLAVOR" in
  camunda-7.21) JAR="$ENGINE_DIR/target/camunda-worker-engine.jar" ;;
  camunda-7.24 | operaton | cibseven) JAR="$ENGINE_DIR/target/camunda-worker-engine-$ENGINE_FLAVOR.jar" ;;
  *) die "unknown ENGINE_FLAVOR '$ENGINE_FLAVOR' (camunda-7.21, camunda-7.24, operaton, cibseven)" ;;
esac
[[ "$ENGINE_START_TIMEOUT" =~ ^[0-9]+$ ]] || die "ENGINE_START_TIMEOUT must be seconds, got '$ENGINE_START_TIMEOUT'"

jar_is_stale() {
  [[ -f "$JAR" ]] || return 0
  [[ -n "$(find "$ENGINE_DIR/pom.xml" "$ENGINE_DIR/src" -newer "$JAR" -print -quit)" ]]
}

cmd_build() {
  mkdir -p "$RUN_DIR"
  # Serialize concurrent builds (parallel tests may all call start).
  exec 9>"$RUN_DIR/build.lock"
  flock 9
  if jar_is_stale; then
    command -v mvn >/dev/null || die "mvn not found (install Maven 3.8+ and Java 17)"
    log "building $ENGINE_FLAVOR engine (first build downloads ~100 MB from Maven Central)..."
    local started=$SECONDS
    # Maven's output goes to stderr (stdout is for the URL printed by start); Debian's Maven 3.8
    # prints stray colour resets even with -B, hence the sed.
    mvn -B -q -f "$ENGINE_DIR/pom.xml" -P "$ENGINE_FLAVOR" package -DskipTests 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' >&2 \
      || die "Maven build failed$([[ $ENGINE_FLAVOR == cibseven ]] && echo ' (cibseven: its Spring Boot starters are not on Maven Central, see engine/README.md)')"
    [[ -f "$JAR" ]] || die "Maven succeeded but $JAR is missing"
    touch "$JAR"
    log "built $JAR in $((SECONDS - started)) s"
  fi
  flock -u 9
  exec 9>&-
}

# ---- processes and ports

# "STATE STARTTIME" of a live process from /proc/PID/stat; fails when there is no such process.
proc_stat() {
  local line fields
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  line=${line##*) }
  read -r -a fields <<<"$line"
  echo "${fields[0]} ${fields[19]}"
}

# alive PID [STARTTIME]: the process exists, is not a zombie and (if given) started at STARTTIME.
alive() {
  local st
  st=$(proc_stat "$1") || return 1
  [[ "${st%% *}" != Z && "${st%% *}" != X ]] || return 1
  [[ -z "${2:-}" || "${st#* }" == "$2" ]]
}

# pid_of PIDFILE STRING...: the pid in PIDFILE if that process is alive and its command line
# contains every STRING; empty otherwise.
pid_of() {
  local file=$1 pid cmdline s
  shift
  [[ -f "$file" ]] || return 0
  pid=$(<"$file")
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
  for s in "$@"; do
    [[ "$cmdline" == *"$s"* ]] || return 0
  done
  echo "$pid"
}

# stop_pid PID SIGNAL SECONDS: send SIGNAL, wait up to SECONDS, then KILL.
stop_pid() {
  local pid=$1 sig=$2 secs=$3 i
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid ignored $sig for ${secs} s: KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
}

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_code URL: the status code of a GET of URL (at most 2 s; 000 or empty when nothing answers).
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }
