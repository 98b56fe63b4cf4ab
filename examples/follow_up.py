#!/usr/bin/env python3
"""A follow-up command for camunda-worker: the long work after the task is completed.

camunda-worker runs it with the completed task as one JSON object on stdin:
    {"taskId": ..., "topic": ..., "businessKey": ..., "processInstanceId": ..., "variables": {...}}
and sends what it prints on stdout (one JSON object) as the follow-up message's variables. A
non-zero exit is retried, then shown in Cockpit as an incident with the last stderr line.

    camunda-worker --follow-up-command examples/follow_up.py

The work may run again after a crash (at least once), so it should be idempotent: here it only
computes its result from the task.
"""

import json
import sys

task = json.load(sys.stdin)
print(f"working on task {task['taskId']} for {task['businessKey']}", file=sys.stderr)
json.dump({"result": "done", "handledTask": task["taskId"]}, sys.stdout)
