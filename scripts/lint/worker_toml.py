"""Checks config/worker.toml against the defaults the binary prints with `--print-config`.

config/worker.toml is the documented sample configuration. The defaults are taken from the binary
itself (`camunda-worker --print-config` without a config file), so the sample cannot drift from the
code:
  - the file is valid TOML;
  - every option with a default is set to exactly that default (same value and type), and nothing
    else is set;
  - the options without a default are present commented out, and each is valid TOML once
    uncommented;
  - every key outside [variables] has a comment line of its own above it.

Usage: worker_toml.py WORKER_TOML PRINT_CONFIG_OUTPUT  (run by scripts/lint-deploy.sh)
"""

import re
import sys
import tomllib

from common import Problems, read_worker_toml

# The options without a default: present in the sample, commented out.
COMMENTED = {
    "worker_id",
    "username",
    "password",
    "password_file",
    "bearer_token",
    "bearer_token_file",
    "oauth_token_url",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_client_secret_file",
    "oauth_scope",
    "ca_cert",
    "client_cert",
    "client_key",
    "follow_up_command",
    "follow_up_args",
    "fetch_variables",
}
KEY_LINE = re.compile(r"^(#\s*)?([a-z_][a-z0-9_]*)\s*=\s*(.+)$")


def read_defaults(path):
    """{key: value, section: {key: value}} from the `--print-config` output.

    Lines look like `key = value  # source`; values whose source is `generated` have no fixed
    default and are left out.
    """
    defaults, section = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            body, _, source = line.rstrip("\n").partition("  # ")
            if body.startswith("["):
                section = body.strip("[] ")
                defaults[section] = {}
                continue
            if "=" not in body or source == "generated":
                continue
            key, value = (part.strip() for part in body.split("=", 1))
            parsed = tomllib.loads(f"v = {value}")["v"]
            if section:
                defaults[section][key] = parsed
            else:
                defaults[key] = parsed
    return defaults


def value_problems(data, defaults, problems):
    """Keys with a default must be set to exactly that default; no other key may be set."""
    for key, value in defaults.items():
        if key not in data:
            problems.add(f"{key}: missing (default {value!r})")
        elif data[key] != value or type(data[key]) is not type(value):
            problems.add(f"{key}: {data[key]!r} differs from the default {value!r}")
    for key in data:
        if key not in defaults:
            problems.add(
                f"{key}: not a known option, or one without a default that should be commented out"
            )


def layout_problems(text, problems):
    """Commented keys are the options without a default; every key has its own comment line."""
    lines = text.splitlines()
    seen_commented = set()
    for i, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m:
            continue
        is_comment, key, value = m.group(1), m.group(2), m.group(3)
        if is_comment:
            if key not in COMMENTED:
                problems.add(
                    f"line {i + 1}: commented key {key!r} is not an option without a default"
                )
                continue
            try:
                tomllib.loads(f"{key} = {value}")
            except tomllib.TOMLDecodeError as e:
                problems.add(
                    f"line {i + 1}: commented {key!r} is not valid TOML once uncommented: {e}"
                )
            seen_commented.add(key)
        in_variables = any(earlier.strip() == "[variables]" for earlier in lines[:i])
        if not in_variables:
            prev = lines[i - 1] if i else ""
            if not prev.startswith("#") or KEY_LINE.match(prev):
                problems.add(f"line {i + 1}: {key!r} has no comment line of its own above it")
    for key in sorted(COMMENTED - seen_commented):
        problems.add(f"{key}: missing (should be present, commented out)")


def main():
    text, data = read_worker_toml(sys.argv[1])  # raises on invalid TOML
    defaults = read_defaults(sys.argv[2])
    problems = Problems()
    value_problems(data, defaults, problems)
    layout_problems(text, problems)
    problems.finish(
        f"ok: {len(defaults) - 1} defaults, {len(COMMENTED)} commented options, [variables]"
    )


if __name__ == "__main__":
    main()
