#!/usr/bin/env bash
# Build, start and stop the camunda-worker test engine (Camunda 7 / forks in Spring Boot).
#
#   engine/engine.sh build               build the jar if missing or stale (Maven, cached)
#   engine/engine.sh start [ARGS...]     build if needed, start in the background, wait until ready,
#                                        print the engine-rest URL on stdout; ARGS go to Spring Boot
#                                        (e.g. --logging.level.root=WARN)
#   engine/engine.sh stop                stop the engine on ENGINE_PORT (idempotent)
#   engine/engine.sh status              print "running ..." (exit 0) or "stopped" (exit 3)
#   engine/engine.sh jar                 print the jar path of ENGINE_FLAVOR
#
# Environment:
#   ENGINE_PORT=8080             HTTP port (the server binds 127.0.0.1 only)
#   ENGINE_FLAVOR=camunda-7.21   camunda-7.21 | camunda-7.24 | operaton | cibseven
#   ENGINE_BASIC_AUTH=1          HTTP Basic auth on /engine-rest/* (user demo/demo)
#   ENGINE_H2_FILE=path          file-backed H2 (state survives a restart) instead of in-memory
#   ENGINE_PARENT_PID=pid        the engine exits within ~1 s once that process is gone
#   ENGINE_START_TIMEOUT=240     seconds to wait for readiness
#   ENGINE_JAVA_OPTS             JVM options (default: -Xms256m -Xmx1g -XX:+UseParallelGC)
#   MAVEN_OPTS, ~/.m2            used by Maven as usual
set -euo pipefail

ENGINE_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
RUN_DIR="$ENGINE_DIR/.run"
ENGINE_PORT=${ENGINE_PORT:-8080}
ENGINE_FLAVOR=${ENGINE_FLAVOR:-camunda-7.21}
ENGINE_START_TIMEOUT=${ENGINE_START_TIMEOUT:-240}
ENGINE_JAVA_OPTS=${ENGINE_JAVA_OPTS:--Xms256m -Xmx1g -XX:+UseParallelGC}
PIDFILE="$RUN_DIR/engine-$ENGINE_PORT.pid"
LOGFILE="$RUN_DIR/engine-$ENGINE_PORT.log"
URL="http://127.0.0.1:$ENGINE_PORT/engine-rest"

log() { printf 'engine.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$ENGINE_FLAVOR" in
  camunda-7.21) JAR="$ENGINE_DIR/target/camunda-worker-engine.jar" ;;
  camunda-7.24 | operaton | cibseven) JAR="$ENGINE_DIR/target/camunda-worker-engine-$ENGINE_FLAVOR.jar" ;;
  *) die "unknown ENGINE_FLAVOR '$ENGINE_FLAVOR' (camunda-7.21, camunda-7.24, operaton, cibseven)" ;;
esac
[[ "$ENGINE_PORT" =~ ^[0-9]+$ ]] || die "ENGINE_PORT must be a number, got '$ENGINE_PORT'"
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

# pid from the pidfile if that process is alive and is our engine; empty otherwise.
running_pid() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid
  pid=$(<"$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'camunda-worker-engine'; then
    echo "$pid"
  fi
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$ENGINE_PORT") 2>/dev/null; }

is_ready() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/engine" 2>/dev/null || true)" == 200 ]]
}

fail_start() { # message
  log "error: $1"
  if [[ -f "$LOGFILE" ]]; then
    log "last 40 lines of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2
  fi
  exit 1
}

cmd_start() {
  command -v java >/dev/null || die "java not found (Java 17+ required)"
  command -v curl >/dev/null || die "curl not found"
  local pid
  pid=$(running_pid)
  [[ -z "$pid" ]] || die "an engine is already running on port $ENGINE_PORT (pid $pid): engine.sh stop first"
  rm -f "$PIDFILE"
  port_answers && die "port $ENGINE_PORT is already in use by another process"
  cmd_build

  local -a java_opts args
  read -r -a java_opts <<<"$ENGINE_JAVA_OPTS"
  args=("--server.port=$ENGINE_PORT")
  [[ "${ENGINE_BASIC_AUTH:-0}" == 1 || "${ENGINE_BASIC_AUTH:-}" == true ]] \
    && args+=("--camunda-worker-engine.basic-auth=true")
  [[ -n "${ENGINE_H2_FILE:-}" ]] && args+=("--camunda-worker-engine.h2-file=$ENGINE_H2_FILE")
  [[ -n "${ENGINE_PARENT_PID:-}" ]] && args+=("--camunda-worker-engine.parent-pid=$ENGINE_PARENT_PID")
  args+=("$@")

  mkdir -p "$RUN_DIR"
  log "starting $ENGINE_FLAVOR on port $ENGINE_PORT (log: $LOGFILE)"
  local started=$SECONDS
  # stdin/stdout/stderr detached so a caller reading our output is not held open by the JVM.
  nohup java "${java_opts[@]}" -jar "$JAR" "${args[@]}" </dev/null >"$LOGFILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"

  while ! is_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      fail_start "engine (pid $pid) exited during startup"
    fi
    if (( SECONDS - started >= ENGINE_START_TIMEOUT )); then
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
      fail_start "engine not ready after ${ENGINE_START_TIMEOUT}s (killed pid $pid)"
    fi
    sleep 0.5
  done
  log "ready in $((SECONDS - started)) s (pid $pid)"
  echo "$URL"
}

cmd_stop() {
  local pid
  pid=$(running_pid)
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 40; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored TERM for 20 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
      done
    fi
    log "stopped engine on port $ENGINE_PORT (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  local pid
  pid=$(running_pid)
  if [[ -n "$pid" ]]; then
    echo "running (port $ENGINE_PORT, pid $pid, $URL)"
  else
    echo "stopped (port $ENGINE_PORT)"
    return 3
  fi
}

case "${1:-}" in
  build) cmd_build ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  jar) echo "$JAR" ;;
  *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
