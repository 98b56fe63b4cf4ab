#!/usr/bin/env bash
# A camunda-worker test cluster on 127.0.0.1: PostgreSQL + N nodes of the engine jar + HAProxy
# (see engine/README.md). `engine/engine.sh cluster ARGS...` runs this script with the same ARGS.
#
#   engine/cluster.sh start [--nodes N] [--base-port P] [-- ARGS...]
#                                        N=2, P=18300: LB on P, nodes on P+1..P+N, PostgreSQL on
#                                        P+50; prints the LB engine-rest URL, then one line per node
#   engine/cluster.sh stop [--base-port P]             stop everything (idempotent)
#   engine/cluster.sh status [--base-port P]           every part, pid, URL (exit 0 | 3)
#   engine/cluster.sh stop-node I [--kill] [--base-port P]      TERM (or KILL) node I
#   engine/cluster.sh start-node I [--base-port P]     start node I again, print its URL
#   engine/cluster.sh restart-node I [--base-port P]   stop-node I + start-node I
#
# Environment: ENGINE_FLAVOR, ENGINE_BASIC_AUTH, ENGINE_PARENT_PID, ENGINE_START_TIMEOUT,
# ENGINE_JAVA_OPTS, MAVEN_OPTS as described in engine/engine.sh.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# Cluster nodes: smaller heap (live data after a full GC ~75 MB) and C1 only (TieredStopAtLevel=1):
# on 2 busy cores two nodes start in ~10-13 s each instead of ~17-23 s; fine for tests, not for
# benchmarks. An explicit ENGINE_JAVA_OPTS applies to cluster nodes too.
CLUSTER_JAVA_OPTS=${ENGINE_JAVA_OPTS:--Xms256m -Xmx768m -XX:+UseParallelGC -XX:TieredStopAtLevel=1}

# State of the cluster on base port P: $RUN_DIR/cluster-P/ (state, pid files, logs, haproxy.cfg;
# the logs stay after a stop). PostgreSQL's data directory lives in a fresh mktemp -d folder that
# `cluster stop` removes.

SELF="$ENGINE_DIR/$(basename -- "${BASH_SOURCE[0]}")"
CLUSTER_DB=camunda
CLUSTER_DB_USER=camunda
CLUSTER_DB_PASSWORD=camunda
C_NODES=2
C_BASE=18300
C_KILL=0
C_INDEX=""
C_ARGS=()

parse_cluster_opts() { # [--nodes N] [--base-port P] [--kill] [I] [-- ARGS...]
  while (($#)); do
    case "$1" in
      --nodes) [[ $# -ge 2 ]] || die "--nodes needs a value"; C_NODES=$2; shift 2 ;;
      --nodes=*) C_NODES=${1#*=}; shift ;;
      --base-port) [[ $# -ge 2 ]] || die "--base-port needs a value"; C_BASE=$2; shift 2 ;;
      --base-port=*) C_BASE=${1#*=}; shift ;;
      --kill) C_KILL=1; shift ;;
      --) shift; C_ARGS=("$@"); break ;;
      [0-9]*) [[ -z "$C_INDEX" ]] || die "cluster: unexpected argument '$1'"; C_INDEX=$1; shift ;;
      *) die "cluster: unknown argument '$1' (see engine/engine.sh without arguments)" ;;
    esac
  done
  if ! [[ "$C_NODES" =~ ^[0-9]+$ ]] || ((C_NODES < 1 || C_NODES > 49)); then
    die "--nodes must be 1..49, got '$C_NODES'"
  fi
  if ! [[ "$C_BASE" =~ ^[0-9]+$ ]] || ((C_BASE < 1024 || C_BASE > 65485)); then
    die "--base-port must be 1024..65485, got '$C_BASE'"
  fi
  C_DIR="$RUN_DIR/cluster-$C_BASE"
  C_PG_PORT=$((C_BASE + 50))
  C_LB_URL="http://127.0.0.1:$C_BASE/engine-rest"
}

node_port() { echo $((C_BASE + $1)); }
node_url() { echo "http://127.0.0.1:$((C_BASE + $1))/engine-rest"; }
pg_url() { echo "postgresql://$CLUSTER_DB_USER:$CLUSTER_DB_PASSWORD@127.0.0.1:$C_PG_PORT/$CLUSTER_DB"; }

# State file: KEY=value lines, read back without sourcing.
state_get() { # KEY -> value (empty if missing)
  [[ -f "$C_DIR/state" ]] || return 0
  local k v
  while IFS='=' read -r k v; do
    if [[ "$k" == "$1" ]]; then
      echo "$v"
      return 0
    fi
  done <"$C_DIR/state"
}

cluster_tmp() { # the PostgreSQL temp folder recorded in the state, if it looks like ours
  local tmp
  tmp=$(state_get tmp)
  if [[ -n "$tmp" && "$(basename -- "$tmp")" == camunda-worker-cluster-* ]]; then
    echo "$tmp"
  fi
}

pg_pid() {
  local tmp
  tmp=$(cluster_tmp)
  [[ -z "$tmp" ]] || pid_of "$C_DIR/postgres.pid" "$tmp/pgdata"
}
lb_pid() { pid_of "$C_DIR/haproxy.pid" "$C_DIR/haproxy.cfg"; }
node_pid() { pid_of "$C_DIR/node-$1.pid" camunda-worker-engine "--server.port=$(node_port "$1")"; }
watchdog_pid() { pid_of "$C_DIR/watchdog-$1.pid" __watchdog; }

pg_bindir() {
  local candidates=(/usr/lib/postgresql/*/bin/postgres)
  [[ -x "${candidates[0]}" ]] || return 0
  dirname -- "$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)"
}

haproxy_bin() { command -v haproxy || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; } || true; }

# Installs HAProxy and PostgreSQL from Debian's packages when missing. Services are not started
# (a temporary /usr/sbin/policy-rc.d that denies every start, unless one exists already).
ensure_cluster_packages() {
  local pkgs=()
  [[ -n "$(haproxy_bin)" ]] || pkgs+=(haproxy)
  [[ -n "$(pg_bindir)" ]] || pkgs+=(postgresql)
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}: install with 'apt-get install ${pkgs[*]}' (as root) and retry"
  command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
  mkdir -p "$RUN_DIR"
  local started=$SECONDS
  (
    exec 7>"$RUN_DIR/apt.lock"
    flock 7
    # Another start may have installed them while we waited.
    local todo=()
    [[ -n "$(haproxy_bin)" ]] || todo+=(haproxy)
    [[ -n "$(pg_bindir)" ]] || todo+=(postgresql)
    ((${#todo[@]})) || exit 0
    log "installing ${todo[*]} from Debian's packages (apt-get; services are not started)..."
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\n# engine.sh cluster: no service starts during apt-get install\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends)
    { "${apt[@]}" install "${todo[@]}" || { apt-get -q -o DPkg::Lock::Timeout=300 update && "${apt[@]}" install "${todo[@]}"; }; } \
      </dev/null >&2 7>&-
  ) || die "apt-get install ${pkgs[*]} failed"
  [[ -n "$(haproxy_bin)" && -n "$(pg_bindir)" ]] || die "haproxy or postgres still missing after apt-get install"
  log "installed ${pkgs[*]} in $((SECONDS - started)) s"
}

# Command prefix that runs a program as the PostgreSQL user (initdb/postgres refuse root); empty
# when we are not root. setpriv execs, so a backgrounded `exec "${PG_RUN[@]}" postgres` keeps its pid.
PG_USER=""
PG_RUN=()
choose_pg_user() {
  [[ $(id -u) == 0 ]] || return 0
  local user=postgres
  if ! id -u "$user" >/dev/null 2>&1; then
    user=camunda-worker-pg
    id -u "$user" >/dev/null 2>&1 \
      || useradd --system --no-create-home --shell /usr/sbin/nologin "$user" \
      || die "could not create a system user for PostgreSQL"
  fi
  PG_USER=$user
  PG_RUN=(setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups --)
}

# Background watchdog: ends CHILD (SIGNAL, then KILL after 5 s) once ENGINE_PARENT_PID is gone;
# exits by itself when CHILD ends. With a temp folder, removes it after CHILD is gone; with a
# cluster directory, first waits (up to 10 s) for the nodes of that cluster to exit.
start_watchdog() { # NAME CHILD_PID SIGNAL [TMP_DIR [CLUSTER_DIR]]
  [[ -n "${ENGINE_PARENT_PID:-}" ]] || return 0
  local pstart cstart
  pstart=$(proc_stat "$ENGINE_PARENT_PID") || die "ENGINE_PARENT_PID $ENGINE_PARENT_PID is not running"
  cstart=$(proc_stat "$2") || return 0
  nohup "$SELF" __watchdog "$ENGINE_PARENT_PID" "${pstart#* }" "$2" "${cstart#* }" "$3" "${4:-}" "${5:-}" \
    </dev/null >/dev/null 2>&1 8>&- &
  echo $! >"$C_DIR/watchdog-$1.pid"
}

# Nodes of the cluster in C_DIR that are still alive (their pid files).
nodes_alive() {
  local f
  for f in "$C_DIR"/node-*.pid; do
    [[ -n "$(pid_of "$f" camunda-worker-engine)" ]] && return 0
  done
  return 1
}

cmd_watchdog() { # PARENT PARENT_START CHILD CHILD_START SIGNAL [TMP_DIR [CLUSTER_DIR]]
  local parent=$1 pstart=$2 child=$3 cstart=$4 sig=$5 dir=${6:-} i
  C_DIR=${7:-}
  trap '' HUP INT
  while alive "$child" "$cstart"; do
    if ! alive "$parent" "$pstart"; then
      # PostgreSQL: let the nodes (their own watchdog fires within ~1 s) shut down first; a node
      # whose database vanished can hang in shutdown waiting for a connection.
      if [[ -n "$C_DIR" ]]; then
        for ((i = 0; i < 100; i++)); do
          nodes_alive || break
          sleep 0.1
        done
      fi
      kill "-$sig" "$child" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive "$child" "$cstart" || break
        sleep 0.1
      done
      alive "$child" "$cstart" && { kill -KILL "$child" 2>/dev/null || true; }
      for ((i = 0; i < 20; i++)); do
        alive "$child" "$cstart" || break
        sleep 0.1
      done
      if [[ -n "$dir" && "$(basename -- "$dir")" == camunda-worker-cluster-* ]]; then
        rm -rf -- "$dir"
      fi
      exit 0
    fi
    sleep 1
  done
}

# Common Spring Boot arguments of every node (the port and the parent pid are added per start).
node_common_args() {
  NODE_ARGS=(
    "--spring.datasource.url=jdbc:postgresql://127.0.0.1:$C_PG_PORT/$CLUSTER_DB"
    "--spring.datasource.username=$CLUSTER_DB_USER"
    "--spring.datasource.password=$CLUSTER_DB_PASSWORD"
  )
  [[ "${ENGINE_BASIC_AUTH:-0}" == 1 || "${ENGINE_BASIC_AUTH:-}" == true ]] \
    && NODE_ARGS+=("--camunda-worker-engine.basic-auth=true")
  NODE_ARGS+=("${C_ARGS[@]}")
}

launch_node() { # I: start the JVM of node I in the background (arguments from the state)
  local i=$1 port jar parent pid
  port=$(node_port "$i")
  jar=$(state_get jar)
  parent=${ENGINE_PARENT_PID:-$(state_get parent_pid)}
  local -a java_opts args
  read -r -a java_opts <<<"$(state_get java_opts)"
  args=("--server.port=$port")
  [[ -n "$parent" ]] && args+=("--camunda-worker-engine.parent-pid=$parent")
  mapfile -d '' -t NODE_ARGS <"$C_DIR/node-args"
  args+=("${NODE_ARGS[@]}")
  port_in_use "$port" && return 2
  nohup java "${java_opts[@]}" -jar "$jar" "${args[@]}" </dev/null >"$C_DIR/node-$i.log" 2>&1 8>&- &
  pid=$!
  echo "$pid" >"$C_DIR/node-$i.pid"
  log "node $i: starting on port $port (pid $pid, log $C_DIR/node-$i.log)"
}

# wait_nodes I...: until every node answers GET /engine-rest/engine with 200. On a death or a
# timeout: prints that node's last 40 log lines and returns 1.
wait_nodes() {
  local started=$SECONDS pending=("$@") still i pid
  while ((${#pending[@]})); do
    still=()
    for i in "${pending[@]}"; do
      if [[ "$(http_code "$(node_url "$i")/engine")" == 200 ]]; then
        log "node $i: ready in $((SECONDS - started)) s"
        continue
      fi
      pid=$(node_pid "$i")
      if [[ -z "$pid" ]]; then
        log "error: node $i ($(node_url "$i")) exited during startup; last 40 lines of $C_DIR/node-$i.log:"
        tail -n 40 "$C_DIR/node-$i.log" >&2 || true
        return 1
      fi
      if ((SECONDS - started >= ENGINE_START_TIMEOUT)); then
        log "error: node $i not ready after ${ENGINE_START_TIMEOUT}s; last 40 lines of $C_DIR/node-$i.log:"
        tail -n 40 "$C_DIR/node-$i.log" >&2 || true
        return 1
      fi
      still+=("$i")
    done
    pending=("${still[@]}")
    ((${#pending[@]})) && sleep 0.5
  done
  return 0
}

write_haproxy_cfg() {
  local nodes=$1 i user=""
  id -u haproxy >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && user=haproxy
  {
    cat <<CFG
# Generated by engine/engine.sh cluster start (base port $C_BASE, $nodes node(s)).
global
    maxconn 4096
    log stdout format raw daemon info
${user:+    user $user
    group $user
}
defaults
    mode http
    log global
    option httplog
    option dontlognull
    # Long polls: fetchAndLock may park up to 30 min (asyncResponseTimeout max 1800000 ms), and the
    # worker waits up to 10 s more. 35 min on both sides: the LB never ends a legal long poll.
    timeout client 35m
    timeout server 35m
    timeout connect 3s
    timeout http-request 30s
    timeout queue 30s
    timeout check 2s
    # Client side: keep-alive, idle connections closed after 60 s like Tomcat itself (the worker's
    # pool drops idle connections after 50 s, so it always closes first: no reuse of a connection
    # the LB is closing). Server side: one connection per request (http-server-close): every
    # request is balanced on its own, no pooled backend connection is reused after Tomcat timed it
    # out or after a node was killed.
    timeout http-keep-alive 60s
    option http-server-close
    # A request that could not connect (node just died) is sent to another node; nothing is
    # retried once it reached a node (POST is not idempotent).
    retries 2
    option redispatch 1
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2

frontend engine
    bind 127.0.0.1:$C_BASE
    acl webapp path_beg /camunda /operaton
    acl lbstats path_beg /haproxy-stats
    use_backend stats if lbstats
    use_backend webapp if webapp
    default_backend engine_rest

# /engine-rest (and everything else): round robin, no stickiness; health check = readiness.
backend engine_rest
    balance roundrobin
    option httpchk
    http-check send meth GET uri /engine-rest/engine ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    http-response set-header X-Served-By %[srv_name]
CFG
    for ((i = 1; i <= nodes; i++)); do
      echo "    server node$i 127.0.0.1:$(node_port "$i") check"
    done
    cat <<CFG

# Cockpit/Tasklist/Admin keep an HTTP session (and its CSRF token) per node: sticky by cookie.
backend webapp
    balance roundrobin
    cookie CAMUNDA_LB_NODE insert indirect nocache httponly
    http-response set-header X-Served-By %[srv_name]
CFG
    for ((i = 1; i <= nodes; i++)); do
      echo "    server node$i 127.0.0.1:$(node_port "$i") track engine_rest/node$i cookie node$i"
    done
    cat <<CFG

# Read-only status page: http://127.0.0.1:$C_BASE/haproxy-stats (CSV: /haproxy-stats;csv).
backend stats
    stats enable
    stats uri /haproxy-stats
CFG
  } >"$C_DIR/haproxy.cfg"
}

# Every server of backend engine_rest with its state, from the stats CSV ("node1 UP").
lb_server_states() {
  curl -s --max-time 2 "http://127.0.0.1:$C_BASE/haproxy-stats;csv" 2>/dev/null \
    | awk -F, '$1 == "engine_rest" && $2 ~ /^node/ { print $2, $18 }'
}

# Stops every part recorded for base port C_BASE (watchdogs, LB, nodes, PostgreSQL), removes the
# temp folder. Idempotent; quiet when nothing runs.
cluster_teardown() {
  [[ -d "$C_DIR" ]] || return 0
  local pid name i nodes tmp pids=()
  for name in postgres haproxy; do
    pid=$(watchdog_pid "$name")
    [[ -z "$pid" ]] || kill -TERM "$pid" 2>/dev/null || true
    rm -f "$C_DIR/watchdog-$name.pid"
  done
  pid=$(lb_pid)
  if [[ -n "$pid" ]]; then
    stop_pid "$pid" TERM 5
    log "stopped HAProxy (pid $pid)"
  fi
  rm -f "$C_DIR/haproxy.pid"
  nodes=$(state_get nodes)
  for ((i = 1; i <= ${nodes:-0}; i++)); do
    pid=$(node_pid "$i")
    if [[ -n "$pid" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$i:$pid")
    fi
  done
  for name in "${pids[@]}"; do
    stop_pid "${name#*:}" TERM 20
    log "stopped node ${name%%:*} (pid ${name#*:})"
  done
  for ((i = 1; i <= ${nodes:-0}; i++)); do rm -f "$C_DIR/node-$i.pid"; done
  pid=$(pg_pid)
  if [[ -n "$pid" ]]; then
    # SIGINT = fast shutdown (disconnects clients); the data is thrown away anyway.
    stop_pid "$pid" INT 15
    log "stopped PostgreSQL (pid $pid)"
  fi
  rm -f "$C_DIR/postgres.pid"
  tmp=$(cluster_tmp)
  if [[ -n "$tmp" && -d "$tmp" ]]; then
    rm -rf -- "$tmp"
  fi
  rm -f "$C_DIR/state" "$C_DIR/node-args"
}

cluster_abort() { # message: stop what was started, exit 1
  [[ -n "${1:-}" ]] && log "error: $1"
  cluster_teardown
  exit 1
}

cmd_cluster_start() {
  command -v java >/dev/null || die "java not found (Java 17+ required)"
  command -v curl >/dev/null || die "curl not found"
  if [[ -n "${ENGINE_PARENT_PID:-}" ]]; then
    if ! [[ "$ENGINE_PARENT_PID" =~ ^[0-9]+$ ]] || ! alive "$ENGINE_PARENT_PID"; then
      die "ENGINE_PARENT_PID '$ENGINE_PARENT_PID' is not a running process"
    fi
  fi
  mkdir -p "$C_DIR"
  exec 8>"$C_DIR/lock"
  flock -n 8 || die "another engine.sh cluster command is running for base port $C_BASE"
  local i pid
  if [[ -f "$C_DIR/state" ]]; then
    local running=()
    [[ -n "$(lb_pid)" ]] && running+=("HAProxy")
    [[ -n "$(pg_pid)" ]] && running+=("PostgreSQL")
    local old_nodes
    old_nodes=$(state_get nodes)
    for ((i = 1; i <= ${old_nodes:-0}; i++)); do [[ -n "$(node_pid "$i")" ]] && running+=("node $i"); done
    ((${#running[@]} == 0)) \
      || die "a cluster is already running on base port $C_BASE (${running[*]}): engine.sh cluster stop --base-port $C_BASE first"
    cluster_teardown # leftovers of a cluster whose parts are all gone
  fi
  local -a ports=("$C_BASE:load balancer" "$C_PG_PORT:PostgreSQL")
  for ((i = 1; i <= C_NODES; i++)); do ports+=("$(node_port "$i"):node $i"); done
  local p
  for p in "${ports[@]}"; do
    port_in_use "${p%%:*}" && die "port ${p%%:*} (${p#*:}) is already in use by another process"
  done

  local started=$SECONDS
  ensure_cluster_packages
  cmd_build
  local pgbin haproxy
  pgbin=$(pg_bindir)
  haproxy=$(haproxy_bin)
  choose_pg_user

  # ---- PostgreSQL
  local tmp
  tmp=$(mktemp -d -t "camunda-worker-cluster-$C_BASE.XXXXXX")
  chmod 711 "$tmp"
  {
    echo "tmp=$tmp"
    echo "nodes=$C_NODES"
    echo "flavor=$ENGINE_FLAVOR"
    echo "jar=$JAR"
    echo "parent_pid=${ENGINE_PARENT_PID:-}"
    echo "java_opts=$CLUSTER_JAVA_OPTS"
  } >"$C_DIR/state"
  node_common_args
  printf '%s\0' "${NODE_ARGS[@]}" >"$C_DIR/node-args"
  mkdir -m 700 "$tmp/pgdata" "$tmp/pgsock"
  [[ -n "$PG_USER" ]] && chown "$PG_USER:" "$tmp/pgdata" "$tmp/pgsock"
  : >"$C_DIR/postgres.log"
  log "PostgreSQL $(basename -- "$(dirname -- "$pgbin")"): initdb in $tmp/pgdata${PG_USER:+ (as $PG_USER)}"
  (cd "$tmp" && "${PG_RUN[@]}" "$pgbin/initdb" -D "$tmp/pgdata" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions) \
    >>"$C_DIR/postgres.log" 2>&1 \
    || { tail -n 40 "$C_DIR/postgres.log" >&2; cluster_abort "initdb failed (log: $C_DIR/postgres.log)"; }
  # Test settings: no fsync / synchronous commit / full-page writes (a crash loses the data, which
  # is thrown away at stop anyway). Unix socket only in the private folder (superuser, trust);
  # TCP on 127.0.0.1 needs the password.
  (cd "$tmp" && exec nohup "${PG_RUN[@]}" "$pgbin/postgres" -D "$tmp/pgdata" \
    -c listen_addresses=127.0.0.1 -c port="$C_PG_PORT" -c unix_socket_directories="$tmp/pgsock" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=$((C_NODES * 10 + 50)) -c shared_buffers=128MB \
    -c log_min_messages=warning -c "log_line_prefix=%m [%p] " \
    </dev/null >>"$C_DIR/postgres.log" 2>&1 8>&-) &
  pid=$!
  echo "$pid" >"$C_DIR/postgres.pid"
  local psql=("$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp/pgsock" -p "$C_PG_PORT" -U postgres -d postgres)
  for ((i = 0; ; i++)); do
    "${psql[@]}" -c 'SELECT 1' >/dev/null 2>&1 && break
    if [[ -z "$(pg_pid)" ]] || ((i >= 300)); then
      tail -n 40 "$C_DIR/postgres.log" >&2
      cluster_abort "PostgreSQL did not start on 127.0.0.1:$C_PG_PORT (log: $C_DIR/postgres.log)"
    fi
    sleep 0.1
  done
  "${psql[@]}" -c "CREATE ROLE $CLUSTER_DB_USER LOGIN PASSWORD '$CLUSTER_DB_PASSWORD'" \
    -c "CREATE DATABASE $CLUSTER_DB OWNER $CLUSTER_DB_USER" >>"$C_DIR/postgres.log" 2>&1 \
    || cluster_abort "could not create the database (log: $C_DIR/postgres.log)"
  start_watchdog postgres "$pid" INT "$tmp" "$C_DIR"
  log "PostgreSQL ready on 127.0.0.1:$C_PG_PORT (pid $pid) after $((SECONDS - started)) s"

  # ---- nodes: node 1 alone first (it creates the schema: schema-update true), then the others
  # together (they find the schema and do not race on creating it).
  launch_node 1 || cluster_abort "port $(node_port 1) (node 1) is already in use by another process"
  wait_nodes 1 || cluster_abort ""
  if ((C_NODES > 1)); then
    local rest=()
    for ((i = 2; i <= C_NODES; i++)); do
      launch_node "$i" || cluster_abort "port $(node_port "$i") (node $i) is already in use by another process"
      rest+=("$i")
    done
    wait_nodes "${rest[@]}" || cluster_abort ""
  fi

  # ---- load balancer
  write_haproxy_cfg "$C_NODES"
  "$haproxy" -c -q -f "$C_DIR/haproxy.cfg" >&2 || cluster_abort "invalid $C_DIR/haproxy.cfg"
  port_in_use "$C_BASE" && cluster_abort "port $C_BASE (load balancer) is already in use by another process"
  : >"$C_DIR/haproxy.log"
  nohup "$haproxy" -db -f "$C_DIR/haproxy.cfg" </dev/null >>"$C_DIR/haproxy.log" 2>&1 8>&- &
  pid=$!
  echo "$pid" >"$C_DIR/haproxy.pid"
  start_watchdog haproxy "$pid" TERM
  for ((i = 0; ; i++)); do
    if [[ "$(http_code "$C_LB_URL/engine")" == 200 ]] \
      && [[ "$(lb_server_states | grep -c ' UP$')" == "$C_NODES" ]]; then
      break
    fi
    if [[ -z "$(lb_pid)" ]] || ((i >= 200)); then
      tail -n 40 "$C_DIR/haproxy.log" >&2
      cluster_abort "HAProxy did not come up on 127.0.0.1:$C_BASE (log: $C_DIR/haproxy.log)"
    fi
    sleep 0.1
  done
  log "HAProxy ready on 127.0.0.1:$C_BASE (pid $pid); cluster of $C_NODES node(s) up in $((SECONDS - started)) s"
  echo "$C_LB_URL"
  for ((i = 1; i <= C_NODES; i++)); do node_url "$i"; done
}

cmd_cluster_stop() {
  [[ -d "$C_DIR" ]] || return 0
  lock_cluster
  cluster_teardown
}

cmd_cluster_status() {
  local nodes i pid all=0 tmp
  nodes=$(state_get nodes)
  if [[ -z "$nodes" ]]; then
    echo "stopped (no cluster on base port $C_BASE)"
    return 3
  fi
  line() { # name pid url
    if [[ -n "$2" ]]; then
      printf '%-9s running  pid %-8s %s\n' "$1" "$2" "$3"
    else
      printf '%-9s stopped  pid %-8s %s\n' "$1" - "$3"
      all=3
    fi
  }
  line lb "$(lb_pid)" "$C_LB_URL"
  for ((i = 1; i <= nodes; i++)); do line "node$i" "$(node_pid "$i")" "$(node_url "$i")"; done
  line postgres "$(pg_pid)" "$(pg_url)"
  return "$all"
}

need_node_index() {
  local nodes
  nodes=$(state_get nodes)
  [[ -n "$nodes" ]] || die "no cluster on base port $C_BASE"
  if ! [[ "$C_INDEX" =~ ^[0-9]+$ ]] || ((C_INDEX < 1 || C_INDEX > nodes)); then
    die "node index must be 1..$nodes, got '${C_INDEX:-}'"
  fi
}

lock_cluster() {
  exec 8>"$C_DIR/lock"
  flock -w 120 8 || die "another engine.sh cluster command holds base port $C_BASE"
}

cmd_cluster_stop_node() {
  need_node_index
  lock_cluster
  local pid
  pid=$(node_pid "$C_INDEX")
  [[ -n "$pid" ]] || { log "node $C_INDEX is not running"; return 0; }
  if ((C_KILL)); then
    stop_pid "$pid" KILL 5
  else
    stop_pid "$pid" TERM 20
  fi
  log "stopped node $C_INDEX (pid $pid)"
}

cmd_cluster_start_node() {
  need_node_index
  lock_cluster
  [[ -z "$(node_pid "$C_INDEX")" ]] || die "node $C_INDEX is already running (pid $(node_pid "$C_INDEX"))"
  [[ -n "$(pg_pid)" ]] || die "PostgreSQL of the cluster on base port $C_BASE is not running"
  launch_node "$C_INDEX" || die "port $(node_port "$C_INDEX") (node $C_INDEX) is already in use by another process"
  wait_nodes "$C_INDEX" || exit 1
  # Back in the LB's rotation (health check: 2 passes 1 s apart) before we return.
  if [[ -n "$(lb_pid)" ]]; then
    local i
    for ((i = 0; i < 100; i++)); do
      [[ "$(lb_server_states | grep -c "^node$C_INDEX UP$")" == 1 ]] && break
      sleep 0.1
    done
    log "node $C_INDEX: $(lb_server_states | grep "^node$C_INDEX " || echo "not in the LB stats") in the load balancer"
  fi
  node_url "$C_INDEX"
}

cmd_cluster() {
  local sub=${1:-}
  shift || true
  parse_cluster_opts "$@"
  case "$sub" in
    start) [[ -z "$C_INDEX" ]] || die "cluster start takes no node index"; cmd_cluster_start ;;
    stop) cmd_cluster_stop ;;
    status) cmd_cluster_status ;;
    stop-node) cmd_cluster_stop_node ;;
    start-node) cmd_cluster_start_node ;;
    restart-node) cmd_cluster_stop_node; cmd_cluster_start_node ;;
    *) die "cluster: unknown sub-command '$sub' (start, stop, status, stop-node, start-node, restart-node)" ;;
  esac
}

case "${1:-}" in
  __watchdog) shift; cmd_watchdog "$@" ;;
  *) cmd_cluster "$@" ;;
esac
