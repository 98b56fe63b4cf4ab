#!/usr/bin/env bash
# Exactly once under combined random faults (tests/it/chaos): the real engine, three worker
# replicas behind fault proxies, instances arriving all along, request faults drawn per request
# and process faults (workers and engine nodes killed, stopped, paused) drawn from a printed seed,
# judged by a checker that reads only what the engine accepted and its history.
#
#   scripts/chaos.sh gate                       the gate: two fixed seeds on the cluster
#                                               (PostgreSQL, two nodes, HAProxy), a minute of
#                                               faults each (scripts/test.sh runs it too)
#   scripts/chaos.sh soak [--duration 2h] [--seed N] [--topology cluster|single] [--out FILE]
#                                               the soak: DURATION of faults in all, half on the
#                                               cluster, then half on one node, from seed N (fresh
#                                               when not given, printed; the node's run uses N+1);
#                                               --topology runs one of the two alone, all DURATION
#                                               long, with the seed it has in the pair; each run's
#                                               figures and any violation appended to FILE
#                                               (default target/chaos-figures.txt), for
#                                               RELIABILITY.md
#
# Exit status: 0 when no promise was broken, 101 (cargo test's) when one was, with each
# violation printed; 2 for bad arguments.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
  sed -n '7,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

mode=${1:-}
[[ -n "$mode" ]] || usage
shift
case "$mode" in
  gate)
    (($# == 0)) || usage
    exec cargo test --locked --test it -- --exact \
      chaos::gate_two_fixed_seeds_on_the_cluster_break_no_promise --nocapture
    ;;
  soak)
    duration=2h seed="" topology="" out=target/chaos-figures.txt
    while (($#)); do
      case "$1" in
        --duration) duration=${2:?--duration needs a value}; shift 2 ;;
        --seed) seed=${2:?--seed needs a value}; shift 2 ;;
        --topology) topology=${2:?--topology needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a file}; shift 2 ;;
        *) echo "scripts/chaos.sh: unknown argument $1" >&2; usage ;;
      esac
    done
    [[ -z "$seed" || "$seed" =~ ^[0-9]+$ ]] || { echo "scripts/chaos.sh: --seed must be a number, not $seed" >&2; exit 2; }
    [[ -z "$topology" || "$topology" == cluster || "$topology" == single ]] || { echo "scripts/chaos.sh: --topology must be cluster or single, not $topology" >&2; exit 2; }
    out=$(realpath -m -- "$out")
    echo "scripts/chaos.sh: soak of $duration in all (${topology:-half on the cluster, half on one node}); figures to $out"
    CHAOS_DURATION=$duration CHAOS_SEED=$seed CHAOS_TOPOLOGY=$topology CHAOS_OUT=$out \
      exec cargo test --locked --test it -- chaos::soak --exact --ignored --nocapture
    ;;
  *) usage ;;
esac
