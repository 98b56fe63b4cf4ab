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
# A cluster (PostgreSQL + N engine nodes + HAProxy, all on 127.0.0.1; see engine/README.md), run
# by engine/cluster.sh (`engine/engine.sh cluster ARGS...` is `engine/cluster.sh ARGS...`):
#   engine/engine.sh cluster start [--nodes N] [--base-port P] [-- ARGS...]
#                                        N=2, P=18300: LB on P, nodes on P+1..P+N, PostgreSQL on
#                                        P+50; prints the LB engine-rest URL, then one line per node
#   engine/engine.sh cluster stop [--base-port P]             stop everything (idempotent)
#   engine/engine.sh cluster status [--base-port P]           every part, pid, URL (exit 0 | 3)
#   engine/engine.sh cluster stop-node I [--kill] [--base-port P]      TERM (or KILL) node I
#   engine/engine.sh cluster start-node I [--base-port P]     start node I again, print its URL
#   engine/engine.sh cluster restart-node I [--base-port P]   stop-node I + start-node I
#
# Environment:
#   ENGINE_PORT=8080             HTTP port (the server binds 127.0.0.1 only)
#   ENGINE_FLAVOR=camunda-7.21   camunda-7.21 | camunda-7.24 | operaton | cibseven
#   ENGINE_BASIC_AUTH=1          HTTP Basic auth on /engine-rest/* (user demo/demo)
#   ENGINE_H2_FILE=path          file-backed H2 (state survives a restart) instead of in-memory
#   ENGINE_PARENT_PID=pid        the engine exits within ~1 s once that process is gone (cluster:
#                                every part, PostgreSQL and HAProxy included)
#   ENGINE_START_TIMEOUT=240     seconds to wait for readiness (per node)
#   ENGINE_JAVA_OPTS             JVM options (default: -Xms256m -Xmx1g -XX:+UseParallelGC; cluster
#                                nodes: -Xms256m -Xmx768m -XX:+UseParallelGC -XX:TieredStopAtLevel=1)
#   MAVEN_OPTS, ~/.m2            used by Maven as usual
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

ENGINE_PORT=${ENGINE_PORT:-8080}
[[ "$ENGINE_PORT" =~ ^[0-9]+$ ]] || die "ENGINE_PORT must be a number, got '$ENGINE_PORT'"

# The cluster is cluster.sh's; it gets ENGINE_JAVA_OPTS as the caller set it (its nodes have a
# default of their own).
if [[ "${1:-}" == cluster ]]; then
  shift
  exec "$ENGINE_DIR/cluster.sh" "$@"
fi

ENGINE_JAVA_OPTS=${ENGINE_JAVA_OPTS:--Xms256m -Xmx1g -XX:+UseParallelGC}
PIDFILE="$RUN_DIR/engine-$ENGINE_PORT.pid"
LOGFILE="$RUN_DIR/engine-$ENGINE_PORT.log"
URL="http://127.0.0.1:$ENGINE_PORT/engine-rest"

# pid from the pidfile if that process is alive and is our engine; empty otherwise.
running_pid() { pid_of "$PIDFILE" camunda-worker-engine; }

is_ready() { [[ "$(http_code "$URL/engine")" == 200 ]]; }

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
  port_in_use "$ENGINE_PORT" && die "port $ENGINE_PORT is already in use by another process"
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
    stop_pid "$pid" TERM 20
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
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
