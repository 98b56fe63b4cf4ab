"""Checks the structure of docker-compose.yml: the services and how they are wired.

dclint validates the file against the Compose Specification; this checks what the project relies
on: the camunda, deploy and worker services exist; deploy runs once camunda is healthy and the
worker starts after deploy completed; the environment is a map of strings (the Rust test that reads
the file expects that form) naming real options of config/worker.toml; the metrics port is
published; the stop grace period is longer than the worker's shutdown grace; and no service that
runs the worker's image is handed a secret in its environment (a password, token or client secret
goes in as a file: Compose `secrets:` mounted under /run/secrets, named by the *_FILE option).

Usage: compose.py DOCKER_COMPOSE_YML WORKER_TOML  (run by scripts/lint-deploy.sh)
"""

import sys

import yaml

from common import Problems, option_names, read_worker_toml, seconds

ENV_PREFIX = "CAMUNDA_WORKER_"

# Options whose value is a secret: never an environment variable, always their *_FILE form.
SECRET_OPTIONS = ("PASSWORD", "BEARER_TOKEN", "OAUTH_CLIENT_SECRET")


def secret_problems(services, problems):
    """Services built from this repository (the worker's image) get secrets as files only."""
    for name, svc in services.items():
        if svc.get("build") is None:
            continue
        env = svc.get("environment") or {}
        for option in SECRET_OPTIONS:
            problems.need(
                ENV_PREFIX + option not in env,
                f"{name}: {ENV_PREFIX}{option} in the environment; mount a secret and use "
                f"{ENV_PREFIX}{option}_FILE",
            )
        url = str(env.get("CAMUNDA_WORKER_ENGINE_URL", ""))
        problems.need("@" not in url, f"{name}: credentials in CAMUNDA_WORKER_ENGINE_URL")


def wiring_problems(services, problems):
    """Images, healthchecks and the start order of camunda, deploy and worker."""
    need = problems.need
    camunda, deploy, worker = services["camunda"], services["deploy"], services["worker"]
    need(camunda.get("image") == "camunda/camunda-bpm-platform:run-7.21.0", "camunda: image")
    need(
        "/engine-rest/engine" in " ".join(camunda.get("healthcheck", {}).get("test", [])),
        "camunda: healthcheck must probe /engine-rest/engine",
    )
    need(
        deploy.get("build") is not None and worker.get("build") is not None,
        "deploy/worker: build: . expected",
    )
    need(deploy.get("command") == ["deploy"], 'deploy: command must be ["deploy"]')
    need(
        deploy.get("depends_on", {}).get("camunda", {}).get("condition") == "service_healthy",
        "deploy: must depend on camunda being healthy",
    )
    deps = worker.get("depends_on", {})
    need(isinstance(deps, dict), "worker: depends_on must be the long (map) form")
    need(
        deps.get("camunda", {}).get("condition") == "service_healthy",
        "worker: camunda must be service_healthy",
    )
    need(
        deps.get("deploy", {}).get("condition") == "service_completed_successfully",
        "worker: deploy must be service_completed_successfully",
    )
    need("healthcheck" in worker, "worker: healthcheck missing")


def environment_problems(services, toml_text, toml, problems):
    """The Rust test reads `command` (a list, or absent) and `environment` (a map of strings)."""
    need = problems.need
    worker = services["worker"]
    need(
        worker.get("command") is None or isinstance(worker["command"], list),
        "worker: command must be a list",
    )
    for svc in ("deploy", "worker"):
        env = services[svc].get("environment")
        need(isinstance(env, dict), f"{svc}: environment must be a map")
        if isinstance(env, dict):
            for k, v in env.items():
                need(
                    isinstance(v, str),
                    f"{svc}: {k} must be a quoted string, got {type(v).__name__}",
                )
    env = worker.get("environment") or {}
    need(
        env.get("CAMUNDA_WORKER_ENGINE_URL") == "http://camunda:8080/engine-rest",
        "worker: engine URL",
    )
    need(env.get("CAMUNDA_WORKER_LOG_FORMAT") == "json", "worker: log format json")
    need(
        "CAMUNDA_WORKER_MAX_TASKS" in env and "RUST_LOG" in env,
        "worker: MAX_TASKS and RUST_LOG expected",
    )
    need(
        "CAMUNDA_WORKER_WORKER_ID" not in env,
        "worker: a constant worker id would be shared by every container",
    )
    options = option_names(toml_text, toml)
    for svc in ("deploy", "worker"):
        for k in services[svc].get("environment") or {}:
            if k.startswith(ENV_PREFIX):
                need(k[len(ENV_PREFIX) :].lower() in options, f"{svc}: {k}: no such option")
    need(
        any(str(p).endswith(":9464") for p in worker.get("ports", [])),
        "worker: port 9464 not published",
    )
    grace = seconds(env.get("CAMUNDA_WORKER_SHUTDOWN_GRACE") or toml["shutdown_grace"])
    need(
        seconds(worker.get("stop_grace_period", "10s")) > grace,
        f"worker: stop_grace_period must exceed the shutdown grace ({grace:g}s)",
    )


def main():
    compose_path, toml_path = sys.argv[1], sys.argv[2]
    with open(compose_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    problems = Problems()
    services = doc.get("services", {})
    for name in ("camunda", "deploy", "worker"):
        problems.need(name in services, f"service {name!r} missing")
    if problems:
        sys.exit("\n".join(problems.items))

    wiring_problems(services, problems)
    toml_text, toml = read_worker_toml(toml_path)
    environment_problems(services, toml_text, toml, problems)
    secret_problems(services, problems)
    problems.finish("ok: camunda, deploy, worker wired as expected")


if __name__ == "__main__":
    main()
