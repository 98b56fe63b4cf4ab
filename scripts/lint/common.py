"""Helpers shared by the checks under scripts/lint/ (run by scripts/lint-deploy.sh).

Standard library only.
"""

import re
import sys
import tomllib

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_COMMENTED_KEY = re.compile(r"^#\s*([a-z_]+)\s*=", re.M)


def read_worker_toml(path):
    """(text, data) of config/worker.toml; raises tomllib.TOMLDecodeError on invalid TOML."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, tomllib.loads(text)


def option_names(text, data):
    """Every option worker.toml documents: set ones, commented-out ones, and `config` (the path).

    CAMUNDA_WORKER_<OPTION> environment variables must name one of these.
    """
    return set(data) | {"config"} | set(_COMMENTED_KEY.findall(text))


def seconds(text):
    """A humantime-style duration ("30s", "1m 30s", "500ms") in seconds."""
    return sum(
        int(num) * _DURATION_UNITS[unit]
        for num, unit in re.findall(r"(\d+)\s*(ms|s|m|h)", str(text))
    )


class Problems:
    """Collects findings; finish() prints them and exits 1, or prints the summary line."""

    def __init__(self):
        self.items = []

    def need(self, cond, msg):
        if not cond:
            self.items.append(msg)

    def add(self, msg):
        self.items.append(msg)

    def extend(self, msgs):
        self.items.extend(msgs)

    def __bool__(self):
        return bool(self.items)

    def finish(self, ok_message):
        report(self.items, ok_message)


def report(problems, ok_message):
    """Prints the problems, one a line, and exits 1; with none, prints ok_message."""
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(ok_message)
