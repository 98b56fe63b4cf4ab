#!/usr/bin/env python3
"""A command for a `complete` route of camunda-worker: the work of a plain external task.

camunda-worker runs it while the task is locked (the lock is extended as it runs), with the task
as one JSON object on stdin:
    {"taskId": ..., "topic": ..., "businessKey": ..., "processInstanceId": ..., "variables": {...}}
and decides the task by how it ends:
- exit 0, one JSON object on stdout: the task is completed with those variables (typed like --var);
- exit 0, {"bpmnError": {"code": ..., "message": ..., "variables": {...}}}: a BPMN error, for an
  error boundary event on the task to catch;
- any other exit, a crash, or the timeout: a failure whose message is the last stderr line; the
  engine retries it (the route's `retries`, `retry_timeout`), then raises an incident.

    [[route]]
    topic = "checkStock"
    kind = "complete"
    command = ["python3", "examples/complete_task.py"]
    fetch_variables = ["quantity"]
"""

import json
import sys

task = json.load(sys.stdin)
quantity = task["variables"].get("quantity")
if not isinstance(quantity, int):
    print(f"task {task['taskId']}: no whole-number `quantity` variable", file=sys.stderr)
    sys.exit(1)
if quantity > 100:
    json.dump({"bpmnError": {"code": "OUT_OF_STOCK", "message": f"only 100 left, {quantity} asked",
                             "variables": {"available": 100}}}, sys.stdout)
else:
    json.dump({"reserved": quantity, "checkedBy": "camunda-worker"}, sys.stdout)
