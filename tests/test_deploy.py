"""The deployment files: Dockerfile (hadolint + its parsed instructions), compose file
(docker-compose's own validator + structure), Kubernetes manifests (the Kubernetes
OpenAPI schemas bundled by kubernetes-validate, strict mode, + structure)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from pydantic_settings import BaseSettings

from bot.chat import adapters as registered_adapters
from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
K8S_VERSION = "1.30.0"  # the oldest release still supported upstream when this was written
USER_ID = 10001


def _need(tool: str | None, name: str) -> str:
    """The tool's path; skip when missing, except in CI where it must be installed."""
    if tool:
        return tool
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed (CI must install it)")
    pytest.skip(f"{name} is not installed")


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
    assert set(services) == {"dockwise", "redis", "dockwise-docker"}
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
    profiled = config("--profile", "docker-socket", "config", "--services").split()
    assert sorted(profiled) == ["dockwise", "dockwise-docker", "redis"]

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
    known = _settings_env_names()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(), re.M)
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"} <= set(
        names
    )
    assert set(names) <= known, set(names) - known
    compose_env = set(_compose()["services"]["dockwise"]["environment"])
    assert compose_env <= known, compose_env - known
    # no value in the example is a real-looking secret
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if re.match(r"^(SLACK|DISCORD)_\w*(TOKEN|SECRET)=.+", line):
            pytest.fail(f"env.example sets a secret: {line.split('=')[0]}")


# --------------------------------------------------------------------------- Kubernetes


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _by_kind_name() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _k8s_docs()}


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    docs = _k8s_docs()
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in docs)
    assert kinds == [
        ("ConfigMap", "dockwise-config"),
        ("Deployment", "dockwise"),
        ("Deployment", "dockwise-redis"),
        ("NetworkPolicy", "dockwise-redis"),
        ("Secret", "dockwise-secrets"),
        ("Service", "dockwise"),
        ("Service", "dockwise-redis"),
    ]
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}: {exc.message}")


def test_kubernetes_schema_check_catches_mistakes() -> None:
    deployment = _by_kind_name()[("Deployment", "dockwise")]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = "dockwise"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kubernetes_bot_deployment_is_locked_down() -> None:
    objects = _by_kind_name()
    pod = objects[("Deployment", "dockwise")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == USER_ID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["resources"]["limits"]["memory"]
    sources = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    assert sources == {"configMapRef": "dockwise-config", "secretRef": "dockwise-secrets"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"cache": "/var/cache/dockwise", "tmp": "/tmp"}
    assert all("emptyDir" in v for v in pod["volumes"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    config = objects[("ConfigMap", "dockwise-config")]["data"]
    assert ports["http"] == int(config["DOCKWISE_PORT"])
    assert config["DOCKWISE_HOST"] == "0.0.0.0"
    redis_service = objects[("Service", "dockwise-redis")]
    redis_port = redis_service["spec"]["ports"][0]["port"]
    assert config["DOCKWISE_REDIS_URL"] == f"redis://dockwise-redis:{redis_port}/0"
    assert set(config) <= _settings_env_names()

    secret = objects[("Secret", "dockwise-secrets")]["stringData"]
    assert set(secret) <= _settings_env_names()
    assert all(value.startswith("REPLACE") for value in secret.values())

    # each Service selects the pods of its Deployment
    for service, deployment in (("dockwise", "dockwise"), ("dockwise-redis", "dockwise-redis")):
        selector = objects[("Service", service)]["spec"]["selector"]
        labels = objects[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_kubernetes_readme_covers_replicas_per_mode() -> None:
    text = (K8S / "README.md").read_text()
    for needle in ("Socket Mode", "HTTP mode", "DISCORD_SHARD_COUNT", "replicas"):
        assert needle in text, needle
