"""Benchmark contender: the original script's shape on camunda-external-task-client-python3.

handle_task starts a thread that sleeps the correlation delay and then posts `sample_response` by
business key, and returns task.complete({"var1": 1, "var2": "value"}) -- as the original script
did. The library fetches with maxTasks from the config and runs the tasks of a batch one after
another on its single thread (each complete is a blocking requests.post, a new connection every
time).

    python worker.py BASE_URL [--max-tasks N] [--async-response-timeout MS] [--delay S]

Without --max-tasks / --async-response-timeout the library's defaults apply (maxTasks 1,
asyncResponseTimeout 30000, lockDuration 300000).
"""

import argparse
import os
import threading
import time

import requests
from camunda.external_task.external_task_worker import ExternalTaskWorker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--max-tasks", type=int)
    parser.add_argument("--async-response-timeout", type=int)
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")

    config = {}
    if args.max_tasks is not None:
        config["maxTasks"] = args.max_tasks
    if args.async_response_timeout is not None:
        config["asyncResponseTimeout"] = args.async_response_timeout
    # On an error the library sleeps sleepSeconds (default 300 s) before polling again; keep the
    # default, as the original script did, so an engine error shows up as a stall.

    def send_message(business_key):
        time.sleep(args.delay)
        try:
            requests.post(
                base_url + "/message",
                json={"messageName": "sample_response", "businessKey": business_key},
                timeout=30,
            )
        except requests.RequestException:
            pass

    def handle_task(task):
        threading.Thread(target=send_message, args=(task.get_business_key(),), daemon=True).start()
        return task.complete({"var1": 1, "var2": "value"})

    worker = ExternalTaskWorker(worker_id=f"bench-python-{os.getpid()}", base_url=base_url, config=config)
    worker.subscribe("messageSending", handle_task)


if __name__ == "__main__":
    main()
