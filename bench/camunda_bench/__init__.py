"""camunda-worker benchmark driver (run it through bench/run.sh, which installs what it needs).

Phases (names for --skip), in this order:

  throughput  per contender, each on a freshly started bundled engine (engine/engine.sh, in-memory
              H2, same JVM settings every time): start the contender, wait until it long-polls the
              engine, start N instances with `camunda-worker start --count N --concurrency 16` while
              it runs, wait until the engine's history shows all N COMPLETED; then a paced run (R
              instances/s, M instances) on the same engine for the unsaturated latency; then a
              backlog drain (the contender paused while B instances are started); stop, restart.
              With --history-levels full,audit: all of that for each contender at each level, the
              engine started with --camunda.bpm.history-level=<level> (the first level's runs are
              the main tables). Contender cw-lookup (only when named in --only) is camunda-worker
              built from d948207, the last build with the event-subscription look-up before each
              message; --ledger runs issue 14's comparison (see --help of --ledger). Contender
              cw-structure (only when named) is camunda-worker built from e38ba4e, d948207's child,
              the structure refactor that changed no behaviour; --structure runs it against
              cw-lookup, --rounds 3 (each round's order reversed from the last). Contender
              cw-command (also only when named) adds --follow-up-command bench/trivial_work.sh;
              cw-complete (only when named) serves the topic with a kind = "complete" route running
              it (bench/complete_route.toml) on bench/plain_task.bpmn, which has no message.
  idle        all real workers at once on one engine, no work: settle, then a window (full run
              120 s + 300 s, quick 20 s + 60 s): requests per endpoint, CPU, RSS; camunda-worker's
              first 2 minutes after its start ("start-up") counted separately.
  overhead    camunda-worker against bench/ceiling's fake engine (canned replies, no JVM),
              --correlation-delay 0s: tasks/s, CPU microseconds per task.
  mismatch    camunda-worker (defaults) on a fresh engine with a backlog larger than its pending
              follow-up capacity and every follow-up undeliverable (--message-name no_such_message
              --correlation-timeout 1h): once fetching has paused and every first attempt is out
              (10 s later, quick 5 s), a window (60 s, quick 10 s): requests/s to the engine (the
              retry budget's bound), CPU, RSS.
  cluster     `engine.sh cluster start --nodes 2` (PostgreSQL, two nodes, HAProxy round robin),
              one contender at a time on the same cluster: pickup latency (task created -> task
              completed, from the engine's external-task log) for instances started on a random
              node at a paced rate (10/s) and sparsely (one every 3 s), then throughput (N started
              through the LB); camunda-worker with both node URLs and with the LB URL, the other
              clients and the ceiling client through the LB. Between contenders: leftovers deleted,
              long polls left parked by the previous one flushed (see quiesce).
  pg-h2       (part of the cluster section) camunda-worker (defaults) on one node on PostgreSQL
              against one node on H2: throughput of N instances started while it runs.

With --neighbour, only this (the phases above are skipped unless named):

  neighbour   another client on the engine (bench/ceiling's neighbour: 20 instances/s of its own
              process, bench/neighbour_task.bpmn, one task on its own topic) alone, and beside
              camunda-worker draining a backlog (9000, quick 2000) at --concurrency fixed
              --max-tasks 256, with the adaptive limit under 256, and at its defaults; each case on
              a fresh engine, 3 rounds in alternating order: the neighbour's round trips over a
              window (its 4th to 20th second), what the worker finished and its limit meanwhile.

Requests are counted from the engines' Tomcat access logs (enabled the same way for every
contender); the contender is told apart from the starter and this driver by path and User-Agent.
"""

# The driver's modules, each imported by those after it:
#   common        paths, constants of the benchmark process, logging, the processes started
#   measurements  /proc sampling, worker metrics, access-log counting, Probe
#   engines       engine REST calls, Engine (H2) and Cluster (PostgreSQL), starters, warm-up, quiesce
#   statistics    latency distributions, pickup latency, CPU and requests per instance
#   contenders    the contenders' command lines and run_contender
#   phases        idle, overhead, mismatch, cluster, PostgreSQL vs H2
#   neighbour     another client beside camunda-worker, and its section of BENCHMARKS.md
#   charts        chart.png, cluster.png
#   comparisons   two builds side by side: the ledger's and the structure's sections of BENCHMARKS.md
#   report        summary.md and the results section of BENCHMARKS.md
#   runner        the command line and main
