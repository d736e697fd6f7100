"""The deployment files: Dockerfile (hadolint + its parsed instructions), compose file
(docker-compose's own validator + structure), Kubernetes manifests (the Kubernetes
OpenAPI schemas bundled by kubernetes-validate, strict mode, + structure)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from pydantic_settings import BaseSettings

from bot.chat import adapters as registered_adapters
from bot.config import Settings
from bot.jobs import QUEUE_NAME

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
K8S_VERSION = "1.30.0"  # the oldest release still supported upstream when this was written
USER_ID = 10001
SCALE = K8S / "scale"
KEDA_WORKER = SCALE / "keda" / "worker-scaledobject.yaml"
#: compose services of the "scale" profile (the roles of `dockwise serve --role ...`)
SCALE_PROFILE = {"dockwise-web", "dockwise-worker", "dockwise-gateway", "postgres"}
#: The saq queue bot/jobs.py puts explanations on; KEDA scales the workers on its list of
#: waiting jobs, saq:<name>:queued.
JOB_QUEUE = QUEUE_NAME


def _need(tool: str | None, name: str) -> str:
    """The tool's path; skip when missing, except in CI where it must be installed."""
    if tool:
        return tool
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed (CI must install it)")
    pytest.skip(f"{name} is not installed")


def _known_env_names() -> set[str]:
    """What deploy/ may set in a dockwise container: the real settings."""
    return _settings_env_names()


def _settings_env_names() -> set[str]:
    names: set[str] = set()
    models: list[type[BaseSettings]] = [
        Settings,
        *(adapter.settings_model for adapter in registered_adapters().values()),
    ]
    fields = [field for model in models for field in model.model_fields.values()]
    for field in fields:
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif alias is not None:
            names.update(str(choice) for choice in alias.choices)  # type: ignore[union-attr]
    return names


# --------------------------------------------------------------------------- Dockerfile


def _stages() -> list[list[dict[str, Any]]]:
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def test_dockerfile_is_hadolint_clean() -> None:
    tool = _need(str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint"), "hadolint")
    result = subprocess.run(
        [tool, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    preamble = next(i for i in parser.structure if i["instruction"] == "ARG")
    assert preamble["value"] == "BASE_IMAGE=python:3.12-slim"
    build, final = _stages()
    assert _values(build, "FROM") == ["${BASE_IMAGE} AS build"]
    assert _values(final, "FROM") == ["${BASE_IMAGE}"]
    assert any("pip wheel" in run for run in _values(build, "RUN"))

    # the final stage copies the venv (articles and model are package data) and the cache
    # dir holding the router fitted at build time, and runs nothing
    assert _values(final, "RUN") == []
    copies = _values(final, "COPY")
    assert copies == [
        "--from=build /opt/venv /opt/venv",
        f"--from=build --chown={USER_ID}:{USER_ID} /out/cache /var/cache/dockwise",
    ]
    assert any("dockwise ask" in run and "/out/cache" in run for run in _values(build, "RUN"))
    assert _values(final, "USER") == [f"{USER_ID}:{USER_ID}"]
    assert _values(final, "ENTRYPOINT") == ['["dockwise"]']
    assert _values(final, "CMD") == ['["serve"]']
    (health,) = _values(final, "HEALTHCHECK")
    assert "/healthz" in health and "python3" in health and "curl" not in health

    env = " ".join(_values(final, "ENV"))
    for setting in ("DOCKWISE_HOST=0.0.0.0", "PIP_NO_CACHE_DIR=1"):
        assert setting in env
    assert "DOCKWISE_KNOWLEDGE_DIR" not in env
    # pip settings for the build (a mirror URL, maybe with credentials) stay in stage 1
    assert "PIP_INDEX_URL" not in " ".join(i["content"] for i in final)
    labels = parser.labels  # the final stage's labels, ARGs substituted with defaults
    assert labels["org.opencontainers.image.base.name"] == "python:3.12-slim"
    for key in ("source", "title", "description", "licenses"):
        assert labels[f"org.opencontainers.image.{key}"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # deny by default
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "bot", "adapters", "knowledge"}
    assert "**/.env" in lines
    # everything the Dockerfile copies from the context is allowed
    sources = [
        value.split()[0]
        for stage in _stages()
        for value in _values(stage, "COPY")
        if not value.startswith("--from")
    ]
    for source in [*sources, "README.md"]:
        assert source.rstrip("/") in allowed, source


# --------------------------------------------------------------------------- compose


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_hardens_the_bot_and_keeps_the_socket_off() -> None:
    services = _compose()["services"]
    assert set(services) == {"dockwise", "redis", "dockwise-docker", *SCALE_PROFILE}
    bot = services["dockwise"]
    assert bot["env_file"] == ".env"
    assert bot["environment"]["DOCKWISE_REDIS_URL"] == "redis://redis:6379/0"
    assert bot["read_only"] is True
    assert any(t.startswith("/tmp") for t in bot["tmpfs"])
    assert "cache:/var/cache/dockwise" in bot["volumes"]
    assert bot["cap_drop"] == ["ALL"]
    assert bot["security_opt"] == ["no-new-privileges:true"]
    assert bot["user"] == f"{USER_ID}:{USER_ID}"
    assert "/healthz" in " ".join(bot["healthcheck"]["test"])
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in bot["ports"])
    assert "profiles" not in bot
    assert not any("docker.sock" in str(v) for v in bot["volumes"])

    redis = services["redis"]
    assert redis["cap_drop"] == ["ALL"] and redis["read_only"] is True
    assert "ports" not in redis  # reachable only on the compose network

    socket = services["dockwise-docker"]
    assert socket["profiles"] == ["docker-socket"]  # never started by a plain `up`
    assert "/var/run/docker.sock:/var/run/docker.sock" in socket["volumes"]
    assert socket["cap_drop"] == ["ALL"] and socket["read_only"] is True
    text = (DEPLOY / "compose.yaml").read_text()
    assert "root" in text[text.index("OFF BY DEFAULT") :][:400]


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    tool = _need(shutil.which("docker-compose"), "docker-compose (Debian package)")
    (tmp_path / "deploy").mkdir()
    shutil.copy(DEPLOY / "compose.yaml", tmp_path / "deploy" / "compose.yaml")
    shutil.copy(DEPLOY / "env.example", tmp_path / "deploy" / ".env")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}

    def config(*args: str) -> str:
        result = subprocess.run(
            [tool, "-f", "deploy/compose.yaml", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    resolved = yaml.safe_load(config("config"))
    bot = resolved["services"]["dockwise"]
    assert bot["build"]["context"] == str(tmp_path)  # `..` from deploy/: the repo root
    assert bot["environment"]["DOCKWISE_EXPLAIN_TIMEOUT"] == "60"  # read from .env
    assert "SLACK_BOT_TOKEN" not in bot["environment"]  # commented out in the example
    assert bot["user"] == f"{USER_ID}:{USER_ID}"
    services = config("--profile", "docker-socket", "--profile", "scale", "config", "--services")
    assert set(services.split()) == {"dockwise", "dockwise-docker", "redis", *SCALE_PROFILE}

    # the scale profile: PostgreSQL's password from deploy/.env reaches the server and the
    # URL the roles use; the roles keep the hardening of the single service
    with (tmp_path / "deploy" / ".env").open("a") as env_file:
        env_file.write("POSTGRES_PASSWORD=from-the-env-file\n")
    scaled = yaml.safe_load(config("--profile", "scale", "config"))["services"]
    assert scaled["postgres"]["environment"]["POSTGRES_PASSWORD"] == "from-the-env-file"
    for name in ("dockwise-web", "dockwise-worker", "dockwise-gateway"):
        role = scaled[name]
        url = urllib.parse.urlsplit(role["environment"]["DOCKWISE_DATABASE_URL"])
        assert (url.scheme, url.password, url.hostname) == (
            "postgresql+psycopg",
            "from-the-env-file",
            "postgres",
        )
        assert role["environment"]["DOCKWISE_REDIS_URL"] == "redis://redis:6379/0"
        assert role["user"] == f"{USER_ID}:{USER_ID}" and role["read_only"] is True
        assert role["cap_drop"] == ["ALL"]

    # the validator is real: a wrong type is refused
    broken = _compose()
    broken["services"]["dockwise"]["read_only"] = "sometimes"
    (tmp_path / "deploy" / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [tool, "-f", "deploy/compose.yaml", "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "read_only" in result.stderr


def test_env_example_names_only_real_settings() -> None:
    known = _known_env_names()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(), re.M)
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"} <= set(
        names
    )
    # besides settings, the variables compose.yaml interpolates (${NAME}) from deploy/.env
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))
    assert set(names) <= known | interpolated, set(names) - known - interpolated
    for name, service in _compose()["services"].items():
        if name.startswith("dockwise"):
            compose_env = set(service["environment"])
            assert compose_env <= known, (name, compose_env - known)
    # no value in the example is a real-looking secret
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if re.match(r"^(SLACK|DISCORD)_\w*(TOKEN|SECRET)=.+", line):
            pytest.fail(f"env.example sets a secret: {line.split('=')[0]}")


def test_job_queue_settings_are_documented_with_the_codes_defaults() -> None:
    """deploy/README.md's job queue table and env.example name every DOCKWISE_QUEUE_MAX /
    DOCKWISE_JOB_* / DOCKWISE_WORKER_* setting with the default the code has."""
    by_alias = {
        str(f.validation_alias): f.default
        for f in Settings.model_fields.values()
        if isinstance(f.validation_alias, str)
    }
    queue_settings = {
        name
        for name in by_alias
        if name.startswith(("DOCKWISE_QUEUE_", "DOCKWISE_JOB_", "DOCKWISE_WORKER_"))
    }
    table = dict(
        re.findall(
            r"^\| `(DOCKWISE_\w+)` \| .*?\((\d+)\)",
            (DEPLOY / "README.md").read_text(),
            re.M,
        )
    )
    example = dict(
        re.findall(r"^#?(DOCKWISE_\w+)=(.*)$", (DEPLOY / "env.example").read_text(), re.M)
    )
    assert set(table) == queue_settings
    for name in sorted(queue_settings):
        assert float(table[name]) == by_alias[name], (name, table[name], by_alias[name])
        assert float(example[name]) == by_alias[name], (name, example.get(name))


def test_templates_name_what_a_tokenless_discord_and_the_scale_profile_need() -> None:
    """Discord interactions without a bot token need DISCORD_PUBLIC_KEY and
    DISCORD_APPLICATION_ID together; compose's ${...} variables (POSTGRES_PASSWORD, which
    README.md says to set in deploy/.env) are named in env.example too."""
    example = (DEPLOY / "env.example").read_text()
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.M))
    assert {"DISCORD_PUBLIC_KEY", "DISCORD_APPLICATION_ID"} <= named
    compose_vars = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))
    assert "POSTGRES_PASSWORD" in compose_vars and "POSTGRES_PASSWORD" in named
    secret = _by_kind_name()[("Secret", "dockwise-secrets")]["stringData"]
    assert {"DISCORD_PUBLIC_KEY", "DISCORD_APPLICATION_ID"} <= set(secret)


def test_an_empty_variable_is_unset_as_the_templates_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.chat import configured_adapters

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", "")
    monkeypatch.setenv("DISCORD_APPLICATION_ID", "")
    assert configured_adapters(Settings()) == []
    for template in (DEPLOY / "env.example", K8S / "secret.example.yaml", K8S / "README.md"):
        text = " ".join(template.read_text().split())
        assert "empty value counts as set" not in text and "even empty, counts as set" not in text


def test_discord_guide_states_the_real_default_port() -> None:
    guide = (DEPLOY / "discord" / "README.md").read_text()
    said = re.findall(r"`DOCKWISE_PORT`, (\d+) by\s+default", guide)
    assert said == [str(Settings.model_fields["port"].default)]


# --------------------------------------------------------------------------- compose: scale


def test_compose_scale_profile_runs_each_role_next_to_the_default() -> None:
    services = _compose()["services"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"dockwise", "redis"}  # a plain `up` is what it was
    scaled = {name for name, service in services.items() if "scale" in service.get("profiles", [])}
    assert scaled == SCALE_PROFILE
    roles = {}
    for name in scaled - {"postgres"}:
        service = services[name]
        roles[name] = _role_of(service["command"])
        assert service["user"] == f"{USER_ID}:{USER_ID}" and service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))
        url = urllib.parse.urlsplit(service["environment"]["DOCKWISE_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port, url.path) == (
            "postgresql+psycopg",
            "postgres",
            5432,
            "/" + services["postgres"]["environment"]["POSTGRES_DB"],
        )
        assert url.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert roles == {
        "dockwise-web": "web",
        "dockwise-worker": "worker",
        "dockwise-gateway": "gateway",
    }
    assert "ports" not in services["dockwise-worker"]  # `--scale dockwise-worker=N` works
    postgres = services["postgres"]
    assert "ports" not in postgres  # reachable only on the compose network
    assert postgres["cap_drop"] == ["ALL"] and postgres["read_only"] is True
    assert "postgres:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres" in _compose()["volumes"]


# --------------------------------------------------------------------------- Kubernetes

DOCKWISE_COMPONENTS = {"bot", "web", "worker", "gateway"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every manifest `kubectl apply` takes: deploy/kubernetes/*.yaml (the small setup,
    shared ConfigMap/Secret/Redis) and deploy/kubernetes/scale/*.yaml (the roles)."""
    docs = []
    for path in [*sorted(K8S.glob("*.yaml")), *sorted(SCALE.glob("*.yaml"))]:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((str(path.relative_to(K8S)), doc))
    return docs


def _by_kind_name() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _k8s_docs()}


def _workloads() -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets by name."""
    return {doc["metadata"]["name"]: doc for _, doc in _k8s_docs() if doc["kind"] in WORKLOAD_KINDS}


def _dockwise_workloads() -> dict[str, dict[str, Any]]:
    return {
        name: doc
        for name, doc in _workloads().items()
        if doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        in DOCKWISE_COMPONENTS
    }


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _role_of(args: list[str]) -> str:
    """The role a `dockwise` command line runs as: `serve` alone is `all`."""
    assert args[0] == "serve", args
    rest = args[1:]
    if not rest:
        return "all"
    assert len(rest) == 2 and rest[0] == "--role", args
    return rest[1]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels, matchExpressions In/NotIn/
    Exists/DoesNotExist), or a plain Service selector."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    docs = _k8s_docs()
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in docs)
    assert kinds == [
        ("ConfigMap", "dockwise-config"),
        ("Deployment", "dockwise"),
        ("Deployment", "dockwise-redis"),
        ("Deployment", "dockwise-web"),
        ("Deployment", "dockwise-worker"),
        ("HorizontalPodAutoscaler", "dockwise-web"),
        ("NetworkPolicy", "dockwise-postgres"),
        ("NetworkPolicy", "dockwise-redis"),
        ("PodDisruptionBudget", "dockwise-web"),
        ("Secret", "dockwise-postgres"),
        ("Secret", "dockwise-secrets"),
        ("Service", "dockwise"),
        ("Service", "dockwise-gateway"),
        ("Service", "dockwise-postgres"),
        ("Service", "dockwise-redis"),
        ("Service", "dockwise-web"),
        ("StatefulSet", "dockwise-gateway"),
        ("StatefulSet", "dockwise-postgres"),
    ]
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}: {exc.message}")


def test_kubernetes_schema_check_catches_mistakes() -> None:
    objects = _by_kind_name()
    deployment = objects[("Deployment", "dockwise")]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = "dockwise"
    hpa = copy.deepcopy(objects[("HorizontalPodAutoscaler", "dockwise-web")])
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilisation"] = 70
    for bad in (typo, wrong_type, hpa):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kubernetes_dockwise_pods_are_locked_down() -> None:
    workloads = _dockwise_workloads()
    assert set(workloads) == {"dockwise", "dockwise-web", "dockwise-worker", "dockwise-gateway"}
    config = _by_kind_name()[("ConfigMap", "dockwise-config")]["data"]
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == USER_ID, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = _container(workload)
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, name
        assert ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["capabilities"] == {"drop": ["ALL"]}, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {"requests", "limits"} <= set(container["resources"]), name
        assert container["resources"]["limits"]["memory"], name
        sources = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
        assert sources == {"configMapRef": "dockwise-config", "secretRef": "dockwise-secrets"}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"cache": "/var/cache/dockwise", "tmp": "/tmp"}, name
        assert all("emptyDir" in v for v in pod["volumes"]), name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(config["DOCKWISE_PORT"]), name
        # the SQLite cache's file stays below its volume's limit (over it: pod evicted); the
        # cap counts entries, and the file with its indexes and page slack is up to ~1.6x
        # that for small entries (plus the WAL): keep the cap at most half the volume
        cache = next(v for v in pod["volumes"] if v["name"] == "cache")["emptyDir"]
        assert 2 * int(config["DOCKWISE_CACHE_MAX_BYTES"]) <= _bytes(cache["sizeLimit"]), name


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_kubernetes_every_dockwise_container_runs_a_real_role() -> None:
    from bot.chat import ROLES

    roles = {name: _role_of(_container(w)["args"]) for name, w in _dockwise_workloads().items()}
    assert set(roles.values()) <= set(ROLES), roles
    assert roles == {
        "dockwise": "all",
        "dockwise-web": "web",
        "dockwise-worker": "worker",
        "dockwise-gateway": "gateway",
    }
    for name, workload in _dockwise_workloads().items():  # the component label says the same
        component = workload["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        assert component == ("bot" if roles[name] == "all" else roles[name])


def test_kubernetes_probes_hit_routes_the_server_serves() -> None:
    from bot.server import build_web_app

    routes = {resource.canonical for resource in build_web_app().router.resources()}
    assert {"/healthz", "/readyz"} <= routes
    probed = 0
    for name, workload in _dockwise_workloads().items():
        container = _container(workload)
        ports = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get is None:
                continue
            probed += 1
            assert get["path"] in routes, (name, probe, get["path"])
            assert get["port"] in ports, (name, probe, get["port"])
    assert probed == 3 * len(_dockwise_workloads())
    # compose's healthchecks too
    for name, service in _compose()["services"].items():
        if name.startswith("dockwise"):
            paths = re.findall(r"http://127\.0\.0\.1:\d+(/\w+)", " ".join(_healthcheck(service)))
            assert paths and set(paths) <= routes, name


def _healthcheck(service: dict[str, Any]) -> list[str]:
    if "healthcheck" in service:
        return [str(part) for part in service["healthcheck"]["test"]]
    anchor = _compose()["x-dockwise"]
    return [str(part) for part in anchor["healthcheck"]["test"]]


def test_kubernetes_manifests_name_only_real_settings() -> None:
    known = _known_env_names()
    objects = _by_kind_name()
    config_text = (K8S / "configmap.yaml").read_text()
    commented = set(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]+):", config_text, re.M))
    config = set(objects[("ConfigMap", "dockwise-config")]["data"]) | commented
    assert config <= known, config - known
    secret = objects[("Secret", "dockwise-secrets")]["stringData"]
    assert set(secret) <= known, set(secret) - known
    assert all(value.startswith("REPLACE") for value in secret.values())
    wanted = {
        "DOCKWISE_REDIS_URL",
        "DOCKWISE_DATABASE_URL",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
        "SLACK_SIGNING_SECRET",
        "DISCORD_PUBLIC_KEY",
        "DOCKWISE_REGISTRY_MIRRORS",
        "DOCKWISE_CACHE_MAX_BYTES",
        "DOCKWISE_RATE_LIMIT",
        "DOCKWISE_EXPLAIN_RATE_LIMIT",
    }
    assert wanted <= config | set(secret), wanted - config - set(secret)
    for name, workload in _dockwise_workloads().items():
        env = {e["name"] for e in _container(workload).get("env", [])}
        assert env <= known, (name, env - known)


def test_kubernetes_services_reach_their_pods() -> None:
    objects = _by_kind_name()
    workloads = _workloads()
    for (kind, name), service in objects.items():
        if kind != "Service":
            continue
        selected = [
            w
            for w in workloads.values()
            if _selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, (name, [w["metadata"]["name"] for w in selected])
        ports = {
            p["name"]
            for c in selected[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
    # the web tier's Service is the one for chat HTTP traffic
    web = objects[("Service", "dockwise-web")]
    assert _selects(
        web["spec"]["selector"], workloads["dockwise-web"]["spec"]["template"]["metadata"]["labels"]
    )
    # the Redis URL names the Redis Service and port
    config = objects[("ConfigMap", "dockwise-config")]["data"]
    redis_port = objects[("Service", "dockwise-redis")]["spec"]["ports"][0]["port"]
    assert config["DOCKWISE_REDIS_URL"] == f"redis://dockwise-redis:{redis_port}/0"
    assert config["DOCKWISE_HOST"] == "0.0.0.0"


def test_kubernetes_network_policies_let_every_role_in() -> None:
    objects = _by_kind_name()
    workloads = _workloads()
    clients = [w["spec"]["template"]["metadata"]["labels"] for w in _dockwise_workloads().values()]
    for server in ("dockwise-redis", "dockwise-postgres"):
        policy = objects[("NetworkPolicy", server)]["spec"]
        assert _selects(
            policy["podSelector"], workloads[server]["spec"]["template"]["metadata"]["labels"]
        )
        peers = [
            peer["podSelector"]
            for rule in policy["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
        ]
        for labels in clients:
            assert any(_selects(peer, labels) for peer in peers), (server, labels)
        outsider = {
            "app.kubernetes.io/name": "something-else",
            "app.kubernetes.io/component": "web",
        }
        assert not any(_selects(peer, outsider) for peer in peers), server


def test_kubernetes_web_tier_scales_on_cpu() -> None:
    objects = _by_kind_name()
    hpa = objects[("HorizontalPodAutoscaler", "dockwise-web")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "dockwise-web")
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    web = objects[("Deployment", "dockwise-web")]
    # CPU utilisation is measured against the request: without one the HPA does nothing
    assert _container(web)["resources"]["requests"]["cpu"]
    assert web["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = objects[("PodDisruptionBudget", "dockwise-web")]["spec"]
    assert _selects(pdb["selector"], web["spec"]["template"]["metadata"]["labels"])


def test_kubernetes_worker_scales_on_the_job_queue_with_keda() -> None:
    objects = _by_kind_name()
    worker = objects[("Deployment", "dockwise-worker")]
    (scaled,) = list(yaml.safe_load_all(KEDA_WORKER.read_text()))
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", worker["metadata"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis"
    assert meta["listName"] == f"saq:{JOB_QUEUE}:queued"
    assert int(meta["listLength"]) >= 1
    redis_service = objects[("Service", "dockwise-redis")]
    host, port = meta["address"].rsplit(":", 1)
    assert host.split(".")[0] == redis_service["metadata"]["name"]
    assert int(port) == redis_service["spec"]["ports"][0]["port"]
    config = objects[("ConfigMap", "dockwise-config")]["data"]
    assert meta["databaseIndex"] == urllib.parse.urlsplit(config["DOCKWISE_REDIS_URL"]).path[1:]
    # a worker stopped by a scale-down finishes the explanation it is running
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["DOCKWISE_EXPLAIN_TIMEOUT"])
    # KEDA is optional: the file is outside the directories `kubectl apply -f` is given
    assert KEDA_WORKER.parent not in {K8S, SCALE}


def test_kubernetes_gateway_runs_one_discord_shard_per_pod() -> None:
    objects = _by_kind_name()
    gateway = objects[("StatefulSet", "dockwise-gateway")]
    env = {e["name"]: e for e in _container(gateway)["env"]}
    assert env["DISCORD_SHARD_COUNT"]["value"] == str(gateway["spec"]["replicas"])
    shard_ids = env["DISCORD_SHARD_IDS"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert shard_ids == "metadata.labels['apps.kubernetes.io/pod-index']"
    headless = objects[("Service", gateway["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    # the single Deployment never runs two gateway sessions side by side either
    assert objects[("Deployment", "dockwise")]["spec"]["strategy"]["type"] == "Recreate"


def test_kubernetes_postgres_and_the_database_url_agree() -> None:
    objects = _by_kind_name()
    postgres = objects[("StatefulSet", "dockwise-postgres")]
    env = {e["name"]: e for e in _container(postgres)["env"]}
    password = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["key"] in objects[("Secret", password["name"])]["stringData"]
    claims = {c["metadata"]["name"] for c in postgres["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in _container(postgres)["volumeMounts"]}
    assert "data" in claims and mounts["data"] == "/var/lib/postgresql/data"
    assert env["PGDATA"]["value"].startswith(mounts["data"] + "/")
    service = objects[("Service", "dockwise-postgres")]
    placeholder = objects[("Secret", "dockwise-secrets")]["stringData"]["DOCKWISE_DATABASE_URL"]
    url = urllib.parse.urlsplit(placeholder.removeprefix("REPLACE-with-"))
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port) == (
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
    )
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.path == "/" + env["POSTGRES_DB"]["value"]


def test_kubernetes_readme_covers_the_topology() -> None:
    text = (K8S / "README.md").read_text()
    for needle in (
        "Socket Mode",
        "HTTP mode",
        "DISCORD_SHARD_COUNT",
        "DISCORD_SHARD_IDS",
        "replicas",
        "--role web",
        "--role worker",
        "--role gateway",
        "/discord/interactions",
        "HorizontalPodAutoscaler",
        "KEDA",
        f"saq:{JOB_QUEUE}:queued",
        "kubernetes-validate",
    ):
        assert needle in text, needle
    top = (DEPLOY / "README.md").read_text()
    for needle in ("--profile scale", "--role web", "/discord/interactions"):
        assert needle in top, needle
    # every job-queue setting and the autoscaling gauge, for the operator who sizes workers
    queue_settings = [
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if str(field.validation_alias).startswith(("DOCKWISE_JOB_", "DOCKWISE_QUEUE_"))
        or field.validation_alias == "DOCKWISE_WORKER_CONCURRENCY"
    ]
    assert len(queue_settings) == 6
    for needle in (*queue_settings, "DOCKWISE_ROLE", "dockwise_queue_jobs"):
        assert f"`{needle}" in top, needle


def _redis_args(args: list[str]) -> dict[str, str]:
    pairs = [a for a in args if a != "redis-server"]
    return {pairs[i].removeprefix("--"): pairs[i + 1] for i in range(0, len(pairs), 2)}


def test_redis_is_bounded_and_evicts_only_keys_with_a_ttl() -> None:
    """Every cache/claim/limit key has a TTL (tests/test_redis_ttls.py); volatile-lru
    evicts only those when maxmemory is reached, never the job queue's TTL-less lists."""
    redis = _container(_workloads()["dockwise-redis"])
    k8s = _redis_args(redis["args"])
    assert k8s["maxmemory-policy"] == "volatile-lru"
    assert _bytes(k8s["maxmemory"].replace("mb", "Mi")) < _bytes(
        redis["resources"]["limits"]["memory"]
    )
    service = _compose()["services"]["redis"]
    compose = _redis_args(service["command"])
    assert compose["maxmemory-policy"] == "volatile-lru"
    assert _bytes(compose["maxmemory"].replace("mb", "Mi")) < _bytes(
        service["mem_limit"].replace("m", "Mi")
    )
