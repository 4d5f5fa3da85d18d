"""Static checks of deploy/: the Dockerfile, docker-compose.yml and the Kubernetes manifests.

No database, no Docker daemon, no cluster, and nothing imported from `service`: the files are
parsed and compared with what the service expects (retention by CronJob, probes, settings;
see docs/architecture.md). Each check is a function
that returns a list of problems, so the same checks are also run against deliberately broken
in-memory manifests to show that they can fail.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# --- what the service is (keep in step with service/settings.py and service/__main__.py) ----

ALLOWED_ENV_VARS = frozenset(
    {
        "DATABASE_URL",
        "METERING_ENV",
        "METERING_SECRET_KEY",
        "METERING_WORKERS",
        "METERING_LOG_LEVEL",
        "METERING_RETENTION_DAYS",
        "METERING_RETENTION_INTERVAL_SECONDS",
        "METERING_RATE_LIMIT_PER_SECOND",
    }
)
CLI_PREFIX = ["python", "-m", "service"]
SUBCOMMANDS = frozenset({"serve", "migrate", "retention"})
HTTP_PORT = 8000
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
METRICS_PATH = "/metrics"
# Seconds a pod keeps serving after it was told to stop, before uvicorn gets SIGTERM; the grace
# period must cover it plus the drain of in-flight requests and the app's shutdown.
MIN_PRESTOP_SECONDS = 5
MIN_DRAIN_SECONDS = 15
IMAGE = "metering-service:latest"
APP_LABEL = "metering"
COMPOSE_DATABASE_URL = "postgresql://metering:metering@postgres:5432/metering"

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
# The image installs the runtime lock; `make install` the full one (dev and embedded extras).
RUNTIME_LOCK = "requirements-runtime.lock"
DEV_ONLY_PACKAGES = frozenset(
    {"pytest", "pytest-asyncio", "mypy", "ruff", "schemathesis", "hypothesis", "pgserver"}
)

Doc = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_documents(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@pytest.fixture(scope="module")
def k8s_docs() -> list[Doc]:
    docs = [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_documents(path)]
    assert docs, f"no Kubernetes manifests under {K8S}"
    return docs


@pytest.fixture(scope="module")
def compose() -> Doc:
    (doc,) = load_documents(COMPOSE_FILE)
    return doc


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def only(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


# --- helpers on manifests --------------------------------------------------------------------


def pod_spec(obj: Doc) -> Doc:
    """The pod spec of a Deployment, Job or CronJob."""
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    pod: Doc = spec.get("template", {}).get("spec", {})
    return pod


def containers(obj: Doc) -> list[Doc]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def argv(command: Any, args: Any = None) -> list[str]:
    """A container's command (+ args) as a list, whether written as a list or a string."""

    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return shlex.split(value)
        return [str(item) for item in value]

    return as_list(command) + as_list(args)


def command_problems(command: list[str]) -> list[str]:
    if command[: len(CLI_PREFIX)] != CLI_PREFIX:
        return [f"{command!r} does not start with {' '.join(CLI_PREFIX)!r}"]
    rest = command[len(CLI_PREFIX) :]
    if not rest or rest[0] not in SUBCOMMANDS:
        return [f"{command!r}: subcommand must be one of {sorted(SUBCOMMANDS)}"]
    if rest[0] == "retention" and rest[1:2] != ["run"]:
        return [f"{command!r}: retention needs the 'run' action"]
    return []


def option(command: list[str], name: str) -> str | None:
    for index, item in enumerate(command):
        if item == name and index + 1 < len(command):
            return command[index + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None


def serve_problems(command: list[str]) -> list[str]:
    problems = command_problems(command)
    if problems:
        return problems
    if command[len(CLI_PREFIX)] != "serve":
        return [f"{command!r} is not 'serve'"]
    if option(command, "--port") != str(HTTP_PORT):
        problems.append(f"{command!r} does not listen on port {HTTP_PORT}")
    if option(command, "--host") != "0.0.0.0":
        problems.append(f"{command!r} does not bind 0.0.0.0 (unreachable from outside)")
    return problems


def container_command(container: Doc) -> list[str]:
    return argv(container.get("command"), container.get("args"))


def probe_problems(container: Doc, probe: str, path: str) -> list[str]:
    http = (container.get(probe) or {}).get("httpGet") or {}
    problems = []
    if http.get("path") != path:
        problems.append(f"{probe} path is {http.get('path')!r}, expected {path!r}")
    if http.get("port") != HTTP_PORT:
        problems.append(f"{probe} port is {http.get('port')!r}, expected {HTTP_PORT}")
    return problems


def resources_problems(container: Doc) -> list[str]:
    resources = container.get("resources") or {}
    problems = []
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not (resources.get(section) or {}).get(resource):
                problems.append(f"{container.get('name')}: resources.{section}.{resource} unset")
    return problems


def non_root_problems(obj: Doc) -> list[str]:
    pod_context = pod_spec(obj).get("securityContext") or {}
    problems = []
    for container in containers(obj):
        context = container.get("securityContext") or {}
        run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"{container.get('name')}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{container.get('name')}: runAsUser is 0")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{container.get('name')}: allowPrivilegeEscalation is not false")
    return problems


def deployment_problems(deployment: Doc) -> list[str]:
    problems: list[str] = []
    pod_containers = pod_spec(deployment).get("containers", [])
    if len(pod_containers) != 1:
        return [f"expected one container, found {len(pod_containers)}"]
    (container,) = pod_containers
    ports = [port.get("containerPort") for port in container.get("ports", [])]
    if ports != [HTTP_PORT]:
        problems.append(f"container ports are {ports}, expected [{HTTP_PORT}]")
    problems += probe_problems(container, "readinessProbe", READINESS_PATH)
    problems += probe_problems(container, "livenessProbe", LIVENESS_PATH)
    problems += resources_problems(container)
    problems += non_root_problems(deployment)
    problems += serve_problems(container_command(container))
    template_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    selector = deployment["spec"]["selector"].get("matchLabels", {})
    if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"selector {selector} does not match the pod labels {template_labels}")
    return problems


def prestop_seconds(container: Doc) -> int | None:
    """The pause of a preStop hook: `sleep N` (exec) or Kubernetes' own sleep action."""
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"].get("seconds", 0))
    command = argv((pre_stop.get("exec") or {}).get("command"))
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return int(command[1])
    return None


def lifecycle_problems(deployment: Doc) -> list[str]:
    """Starting, stopping and being scraped: startupProbe, preStop drain with a grace period
    that covers it, Prometheus annotations."""
    (container,) = pod_spec(deployment).get("containers", [])
    problems = probe_problems(container, "startupProbe", LIVENESS_PATH)
    pause = prestop_seconds(container)
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    if pause is None or pause < MIN_PRESTOP_SECONDS:
        problems.append(f"no preStop pause of at least {MIN_PRESTOP_SECONDS} s to drain")
    elif grace < pause + MIN_DRAIN_SECONDS:
        problems.append(
            f"terminationGracePeriodSeconds {grace} leaves less than {MIN_DRAIN_SECONDS} s "
            f"after the {pause} s preStop pause to finish requests"
        )
    annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    expected = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    for key, value in expected.items():
        if annotations.get(key) != value:
            problems.append(f"pod annotation {key} is {annotations.get(key)!r}, not {value!r}")
    return problems


def pdb_problems(pdb: Doc, deployment: Doc, hpa: Doc) -> list[str]:
    problems: list[str] = []
    if pdb.get("apiVersion") != "policy/v1":
        problems.append(f"PodDisruptionBudget apiVersion is {pdb.get('apiVersion')!r}")
    spec = pdb.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"PDB selector {selector} does not select the API pods {pod_labels}")
    minimum = hpa["spec"]["minReplicas"]
    if "minAvailable" in spec:
        if not isinstance(spec["minAvailable"], int) or not 1 <= spec["minAvailable"] < minimum:
            # Equal to the HPA minimum, no eviction is ever allowed: drains hang.
            problems.append(
                f"minAvailable {spec['minAvailable']!r} must be 1..{minimum - 1} "
                f"(the HPA minimum is {minimum})"
            )
    elif spec.get("maxUnavailable") not in (1, "1"):
        problems.append("the PDB sets neither minAvailable nor maxUnavailable: 1")
    return problems


def env_names(node: Any) -> Iterator[str]:
    """Every environment variable a manifest sets or refers to, wherever it is written.

    Covers container `env`, ConfigMap/Secret keys, compose `environment` (map or list) and
    `${VAR}` interpolations in any string value.
    """
    if isinstance(node, dict):
        kind = node.get("kind")
        if kind == "ConfigMap":
            yield from (node.get("data") or {}).keys()
        if kind == "Secret":
            yield from (node.get("data") or {}).keys()
            yield from (node.get("stringData") or {}).keys()
        for item in node.get("env") or []:
            if isinstance(item, dict) and "name" in item:
                yield item["name"]
        environment = node.get("environment")
        if isinstance(environment, dict):
            yield from environment.keys()
        elif isinstance(environment, list):
            yield from (str(item).split("=", 1)[0] for item in environment)
        for value in node.values():
            yield from env_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from env_names(value)
    elif isinstance(node, str):
        yield from re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", node)


def env_problems(names: set[str]) -> list[str]:
    service_names = {n for n in names if n.startswith("METERING_") or n == "DATABASE_URL"}
    return [f"unknown setting {name}" for name in sorted(service_names - ALLOWED_ENV_VARS)]


def compose_problems(compose: Doc) -> list[str]:
    services = compose.get("services") or {}
    missing = {"postgres", "migrate", "api"} - services.keys()
    if missing:
        return [f"compose services missing: {sorted(missing)}"]
    postgres, migrate, api = services["postgres"], services["migrate"], services["api"]
    problems: list[str] = []

    if not str(postgres.get("image", "")).startswith("postgres:16"):
        problems.append(f"postgres image is {postgres.get('image')!r}, expected postgres:16")
    if "pg_isready" not in json.dumps((postgres.get("healthcheck") or {}).get("test")):
        problems.append("postgres healthcheck does not use pg_isready")
    if not postgres.get("volumes"):
        problems.append("postgres has no volume for its data")

    for name, service in (("migrate", migrate), ("api", api)):
        build = service.get("build") or {}
        if build.get("context") != ".." or build.get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{name} is not built from .. with deploy/Dockerfile: {build}")
        if service.get("image") != IMAGE:
            problems.append(f"{name} image is {service.get('image')!r}, expected {IMAGE!r}")
        if (service.get("environment") or {}).get("DATABASE_URL") != COMPOSE_DATABASE_URL:
            problems.append(f"{name} DATABASE_URL is not {COMPOSE_DATABASE_URL}")

    migrate_command = argv(migrate.get("command"))
    if migrate_command != [*CLI_PREFIX, "migrate"]:
        problems.append(f"migrate runs {migrate_command!r}")
    if (migrate.get("depends_on") or {}).get("postgres", {}).get("condition") != (
        "service_healthy"
    ):
        problems.append("migrate does not wait for postgres to be healthy")

    problems += serve_problems(argv(api.get("command")))
    published = [
        str(port) if not isinstance(port, dict) else f"{port.get('published')}:{port.get('target')}"
        for port in api.get("ports") or []
    ]
    if f"{HTTP_PORT}:{HTTP_PORT}" not in published:
        problems.append(f"api does not publish {HTTP_PORT}:{HTTP_PORT} (ports: {published})")
    if (api.get("depends_on") or {}).get("migrate", {}).get("condition") != (
        "service_completed_successfully"
    ):
        problems.append("api does not wait for migrate to complete successfully")
    if LIVENESS_PATH not in json.dumps((api.get("healthcheck") or {}).get("test")):
        problems.append(f"api healthcheck does not call {LIVENESS_PATH}")
    return problems


# --- helpers on the Dockerfile ---------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_problems(text: str) -> list[str]:
    instructions = dockerfile_instructions(text)
    stage_starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    if len(stage_starts) < 2:
        return ["Dockerfile is not multi-stage"]
    final = instructions[stage_starts[-1] :]
    problems: list[str] = []

    if not final[0][1].startswith("python:3.11-slim"):
        problems.append(f"runtime stage is FROM {final[0][1]!r}, expected python:3.11-slim")
    users = [args for keyword, args in final if keyword == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("runtime stage does not switch to a non-root USER")
    exposed = [port for keyword, args in final if keyword == "EXPOSE" for port in args.split()]
    if str(HTTP_PORT) not in [port.split("/")[0] for port in exposed]:
        problems.append(f"runtime stage does not EXPOSE {HTTP_PORT}")
    healthchecks = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    if not healthchecks or LIVENESS_PATH not in healthchecks[-1]:
        problems.append(f"no HEALTHCHECK calling {LIVENESS_PATH}")
    elif re.search(r"\b(curl|wget)\b", healthchecks[-1]):
        problems.append("HEALTHCHECK uses curl/wget, which python:3.11-slim does not have")

    copies = " ".join(args for keyword, args in instructions if keyword == "COPY")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    if RUNTIME_LOCK not in copies:
        problems.append(f"{RUNTIME_LOCK} is not copied into the build")
    if not any("pip install" in run and RUNTIME_LOCK in run for run in runs):
        problems.append(f"dependencies are not installed from {RUNTIME_LOCK}")
    if re.search(r"\brequirements\.lock\b", copies):
        problems.append("the development lock (test and lint tools) is copied into the image")
    if not any(re.search(r"pip install --no-deps \.(\s|$)", run) for run in runs):
        problems.append("the package is not installed with pip install --no-deps .")
    final_copies = [args for keyword, args in final if keyword == "COPY"]
    if not any("--from=" in args for args in final_copies):
        problems.append("runtime stage copies nothing from the builder (the venv)")
    for needed in ("service", "alembic", "alembic.ini"):
        if not any(needed in args.split()[:-1] for args in final_copies):
            problems.append(f"runtime stage does not copy {needed}")

    cmds = [args for keyword, args in final if keyword == "CMD"]
    try:
        cmd = json.loads(cmds[-1]) if cmds else []
    except json.JSONDecodeError:
        cmd = []
        problems.append("CMD is not in exec (JSON) form")
    if cmd:
        problems += serve_problems(cmd)
    elif not cmds:
        problems.append("no CMD")
    return problems


# --- the real files --------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses_to_mappings() -> None:
    files = yaml_files()
    assert COMPOSE_FILE in files
    assert len([f for f in files if f.parent == K8S]) >= 7
    for path in files:
        docs = load_documents(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_compose_runs_postgres_then_migrate_then_api(compose: Doc) -> None:
    assert compose_problems(compose) == []


def test_dockerfile(dockerfile_text: str) -> None:
    assert dockerfile_problems(dockerfile_text) == []


def locked_packages(path: Path) -> set[str]:
    return {
        line.split("==")[0].strip().lower()
        for line in path.read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }


def runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].strip().lower()
        for requirement in project["dependencies"]
    }


def test_the_image_lock_holds_runtime_dependencies_only() -> None:
    runtime = locked_packages(ROOT / RUNTIME_LOCK)
    full = locked_packages(ROOT / "requirements.lock")
    # Every runtime dependency of pyproject.toml is in the image's lock (a dependency added to
    # pyproject.toml and the full lock only would be missing from the image).
    assert runtime_dependencies() <= runtime, sorted(runtime_dependencies() - runtime)
    assert not runtime & DEV_ONLY_PACKAGES, sorted(runtime & DEV_ONLY_PACKAGES)
    # make install still gets everything, including the embedded PostgreSQL of make run.
    assert full >= DEV_ONLY_PACKAGES
    assert runtime <= full
    assert RUNTIME_LOCK in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")


@pytest.mark.parametrize("lock", ["requirements.lock", RUNTIME_LOCK])
def test_locks_name_packages_not_the_machine_that_compiled_them(lock: str) -> None:
    """No --index-url / --extra-index-url / --find-links: those are where one machine found
    the wheels (file:///opt/...), meaningless or wrong anywhere else."""
    text = (ROOT / lock).read_text(encoding="utf-8")
    options = [line for line in text.splitlines() if line.startswith("-")]
    assert options == [], options
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--no-emit-index-url" in makefile and "--no-emit-find-links" in makefile


def test_deployment(k8s_docs: list[Doc]) -> None:
    deployment = only(k8s_docs, "Deployment")
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment_problems(deployment) == []


def test_deployment_starts_drains_and_is_scraped(k8s_docs: list[Doc]) -> None:
    assert lifecycle_problems(only(k8s_docs, "Deployment")) == []


def test_a_disruption_budget_keeps_one_api_pod(k8s_docs: list[Doc]) -> None:
    pdb = only(k8s_docs, "PodDisruptionBudget")
    deployment = only(k8s_docs, "Deployment")
    assert pdb_problems(pdb, deployment, only(k8s_docs, "HorizontalPodAutoscaler")) == []
    assert pdb["metadata"]["labels"]["app"] == APP_LABEL


def test_service_targets_the_deployment_on_8000(k8s_docs: list[Doc]) -> None:
    service = only(k8s_docs, "Service")
    deployment = only(k8s_docs, "Deployment")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert port["targetPort"] == HTTP_PORT
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector, "a Service without a selector routes nowhere"
    assert all(pod_labels.get(key) == value for key, value in selector.items())


def test_hpa_scales_the_deployment_on_cpu(k8s_docs: list[Doc]) -> None:
    hpa = only(k8s_docs, "HorizontalPodAutoscaler")
    deployment = only(k8s_docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["type"] == "Resource"
    # Utilization targets are relative to requests, so the Deployment must request CPU.
    assert resources_problems(containers(deployment)[0]) == []


def test_migration_job_runs_migrate(k8s_docs: list[Doc]) -> None:
    job = only(k8s_docs, "Job")
    (container,) = containers(job)
    assert container_command(container) == [*CLI_PREFIX, "migrate"]
    assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}


def test_retention_cronjob_runs_retention_without_overlap(k8s_docs: list[Doc]) -> None:
    cronjob = only(k8s_docs, "CronJob")
    (container,) = containers(cronjob)
    assert container_command(container)[: len(CLI_PREFIX) + 2] == [*CLI_PREFIX, "retention", "run"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    assert pod_spec(cronjob)["restartPolicy"] in {"Never", "OnFailure"}


def test_every_workload_runs_the_cli_as_non_root_with_resources(
    k8s_docs: list[Doc], compose: Doc
) -> None:
    workloads = [doc for doc in k8s_docs if doc["kind"] in {"Deployment", "Job", "CronJob"}]
    assert len(workloads) == 3
    commands = []
    for workload in workloads:
        assert non_root_problems(workload) == []
        for container in containers(workload):
            assert container["image"] == IMAGE, "one image for every workload"
            assert resources_problems(container) == []
            commands.append(container_command(container))
    for name in ("migrate", "api"):
        commands.append(argv(compose["services"][name].get("command")))
    for command in commands:
        assert command_problems(command) == []
    used = {command[len(CLI_PREFIX)] for command in commands}
    assert used == SUBCOMMANDS


def test_settings_come_from_the_configmap_and_secret(k8s_docs: list[Doc]) -> None:
    configmap = only(k8s_docs, "ConfigMap")
    secret = only(k8s_docs, "Secret")
    secret_keys = {*(secret.get("stringData") or {}), *(secret.get("data") or {})}
    assert {"DATABASE_URL", "METERING_SECRET_KEY"} <= secret_keys
    assert not secret_keys & set(configmap["data"]), "a setting is in both"
    # The CronJob does retention; the in-service loop must be off in every replica.
    assert configmap["data"]["METERING_RETENTION_INTERVAL_SECONDS"] == "0"
    # Production: the API refuses the secret.yaml placeholder instead of hashing keys with it.
    assert configmap["data"]["METERING_ENV"] == "production"
    assert str((secret.get("stringData") or {})["METERING_SECRET_KEY"]).startswith("REPLACE_ME")
    assert all(isinstance(value, str) for value in configmap["data"].values())
    for workload in k8s_docs:
        for container in containers(workload):
            sources = container.get("envFrom") or []
            config_refs = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
            secret_refs = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
            assert config_refs == [configmap["metadata"]["name"]], container["name"]
            assert secret_refs == [secret["metadata"]["name"]], container["name"]


def test_only_known_settings_are_referenced(dockerfile_text: str) -> None:
    names = {name for path in yaml_files() for name in env_names(load_documents(path))}
    names |= set(re.findall(r"\b(?:METERING_[A-Z0-9_]+|DATABASE_URL)\b", dockerfile_text))
    assert "DATABASE_URL" in names and "METERING_SECRET_KEY" in names
    assert env_problems(names) == []


def test_every_k8s_object_is_labelled(k8s_docs: list[Doc]) -> None:
    for doc in k8s_docs:
        assert doc["metadata"]["labels"]["app"] == APP_LABEL, doc["metadata"]["name"]
        if doc["kind"] in {"Deployment", "Job", "CronJob"}:
            template = doc["spec"]
            if doc["kind"] == "CronJob":
                template = template["jobTemplate"]["spec"]
            assert template["template"]["metadata"]["labels"]["app"] == APP_LABEL


@pytest.mark.parametrize(
    "command",
    [["serve"], ["migrate"], ["retention", "run"], ["keys", "create"]],
    ids=" ".join,
)
def test_the_cli_has_the_commands_the_manifests_run(command: list[str]) -> None:
    """Every command deploy/ runs exists with the options it is given (help only: no
    database is touched)."""
    from click.testing import CliRunner

    from service.__main__ import cli

    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    if command == ["serve"]:
        for option in ("--host", "--port", "--workers"):
            assert option in result.output
    if command == ["retention", "run"]:
        assert "--dry-run" in result.output and "--tenant" in result.output


def test_readme_documents_bootstrap_and_citus() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "python -m service keys create --scope admin --name bootstrap" in text
    assert "create_distributed_table('events', 'tenant_id')" in re.sub(r",\s+", ", ", text)
    for table in ("tenants", "meters", "prices", "api_keys"):
        assert f"create_reference_table('{table}')" in text


# --- the checks can fail ---------------------------------------------------------------------

GOOD_DEPLOYMENT: Doc = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "x", "labels": {"app": APP_LABEL}},
    "spec": {
        "selector": {"matchLabels": {"app": APP_LABEL}},
        "template": {
            "metadata": {"labels": {"app": APP_LABEL}},
            "spec": {
                "securityContext": {"runAsNonRoot": True},
                "containers": [
                    {
                        "name": "api",
                        "image": IMAGE,
                        "command": [*CLI_PREFIX, "serve", "--host", "0.0.0.0", "--port", "8000"],
                        "ports": [{"containerPort": 8000}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8000}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "1", "memory": "256Mi"},
                        },
                        "securityContext": {"allowPrivilegeEscalation": False},
                    }
                ],
            },
        },
    },
}


def _container(doc: Doc) -> Doc:
    container: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _break_readiness(doc: Doc) -> None:
    _container(doc)["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _break_liveness_port(doc: Doc) -> None:
    _container(doc)["livenessProbe"]["httpGet"]["port"] = 8080


def _break_container_port(doc: Doc) -> None:
    _container(doc)["ports"] = [{"containerPort": 80}]


def _drop_limits(doc: Doc) -> None:
    del _container(doc)["resources"]["limits"]


def _run_as_root(doc: Doc) -> None:
    doc["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}


def _wrong_serve_port(doc: Doc) -> None:
    _container(doc)["command"] = [*CLI_PREFIX, "serve", "--host", "0.0.0.0", "--port", "9000"]


def _not_the_cli(doc: Doc) -> None:
    _container(doc)["command"] = ["uvicorn", "service.app:app"]


def _selector_mismatch(doc: Doc) -> None:
    doc["spec"]["selector"]["matchLabels"] = {"app": "other"}


def test_lifecycle_and_pdb_checks_can_fail(k8s_docs: list[Doc]) -> None:
    deployment = only(k8s_docs, "Deployment")
    hpa = only(k8s_docs, "HorizontalPodAutoscaler")
    pdb = only(k8s_docs, "PodDisruptionBudget")

    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    del container["startupProbe"]
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 12
    broken["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9090"
    problems = lifecycle_problems(broken)
    for expected in ("startupProbe path", "terminationGracePeriodSeconds 12", "prometheus.io/port"):
        assert any(expected in problem for problem in problems), (expected, problems)
    del container["lifecycle"]
    assert any("preStop" in problem for problem in lifecycle_problems(broken))

    too_strict = copy.deepcopy(pdb)
    too_strict["spec"]["minAvailable"] = hpa["spec"]["minReplicas"]
    too_strict["spec"]["selector"]["matchLabels"] = {"app": "other"}
    problems = pdb_problems(too_strict, deployment, hpa)
    assert any("minAvailable" in problem for problem in problems), problems
    assert any("does not select" in problem for problem in problems), problems


def test_the_in_memory_deployment_baseline_is_good() -> None:
    assert deployment_problems(copy.deepcopy(GOOD_DEPLOYMENT)) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_break_readiness, "readinessProbe path"),
        (_break_liveness_port, "livenessProbe port"),
        (_break_container_port, "container ports"),
        (_drop_limits, "resources.limits.cpu"),
        (_run_as_root, "runAsNonRoot"),
        (_wrong_serve_port, "port 8000"),
        (_not_the_cli, "does not start with"),
        (_selector_mismatch, "selector"),
    ],
)
def test_deployment_checks_catch_a_broken_manifest(breakage: Any, expected: str) -> None:
    doc = copy.deepcopy(GOOD_DEPLOYMENT)
    breakage(doc)
    problems = deployment_problems(doc)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "command",
    [
        ["python", "service", "migrate"],
        [*CLI_PREFIX],
        [*CLI_PREFIX, "shell"],
        [*CLI_PREFIX, "retention"],
        [*CLI_PREFIX, "retention", "purge"],
        ["python3", "-m", "service", "serve"],
    ],
)
def test_command_check_rejects_unknown_commands(command: list[str]) -> None:
    assert command_problems(command) != []


def test_command_check_accepts_the_known_commands() -> None:
    for command in (
        [*CLI_PREFIX, "migrate"],
        [*CLI_PREFIX, "retention", "run", "--dry-run"],
        argv("python -m service serve --host 0.0.0.0 --port 8000"),
    ):
        assert command_problems(command) == []


def test_env_check_catches_unknown_settings() -> None:
    doc = {
        "kind": "ConfigMap",
        "data": {"METERING_LOG_LEVEL": "INFO", "METERING_RETENTION_DAY": "400"},
    }
    compose_like = {
        "environment": ["DATABASE_URL=x", "METERING_SECRET=y"],
        "command": "echo ${METERING_TYPO:-1}",
    }
    names = set(env_names([doc, compose_like]))
    assert {"METERING_RETENTION_DAY", "METERING_SECRET", "METERING_TYPO"} <= names
    assert env_problems(names) == [
        "unknown setting METERING_RETENTION_DAY",
        "unknown setting METERING_SECRET",
        "unknown setting METERING_TYPO",
    ]
    assert env_problems({"DATABASE_URL", "HOME", "METERING_WORKERS"}) == []


def test_compose_check_catches_a_broken_file(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["migrate"]["command"] = "python -m service serve"
    broken["services"]["api"]["ports"] = ["8080:8000"]
    broken["services"]["api"]["depends_on"] = {"migrate": {"condition": "service_started"}}
    problems = compose_problems(broken)
    assert any("migrate runs" in p for p in problems), problems
    assert any("does not publish 8000:8000" in p for p in problems), problems
    assert any("complete successfully" in p for p in problems), problems
    del broken["services"]["postgres"]
    assert compose_problems(broken) == ["compose services missing: ['postgres']"]


BROKEN_DOCKERFILE = """\
FROM python:3.11 AS builder
RUN pip install -r requirements.txt
FROM python:3.11
COPY . /app
EXPOSE 8080
HEALTHCHECK CMD curl -f http://localhost:8000/healthz
CMD python -m service serve
"""


def test_dockerfile_check_catches_a_broken_dockerfile() -> None:
    problems = dockerfile_problems(BROKEN_DOCKERFILE)
    for expected in (
        "expected python:3.11-slim",
        "non-root USER",
        "EXPOSE 8000",
        "curl/wget",
        "requirements-runtime.lock is not copied",
        "installed from requirements-runtime.lock",
        "--no-deps",
        "copies nothing from the builder",
        "does not copy alembic.ini",
        "exec (JSON) form",
    ):
        assert any(expected in problem for problem in problems), (expected, problems)
    assert dockerfile_problems("FROM python:3.11-slim\nCMD []\n") == [
        "Dockerfile is not multi-stage"
    ]
    root_again = DOCKERFILE.read_text(encoding="utf-8").replace(
        "\nEXPOSE 8000", "\nUSER root\nEXPOSE 8000"
    )
    assert "runtime stage does not switch to a non-root USER" in dockerfile_problems(root_again)
    with_dev_lock = DOCKERFILE.read_text(encoding="utf-8").replace(
        "COPY requirements-runtime.lock ./", "COPY requirements-runtime.lock requirements.lock ./"
    )
    assert any("development lock" in p for p in dockerfile_problems(with_dev_lock))
