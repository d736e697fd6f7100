"""bot.server over a real aiohttp server on loopback, and bot.observability's logs as a
separate process writes them to a real pipe (JSON) or a real terminal (console)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import string
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pexpect
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot import observability as obs
from bot import server
from bot.errors import ImageNotFound, TimedOut
from bot.server import build_web_app, start_web_app

ROOT = Path(__file__).resolve().parent.parent


class Checks:
    """A readiness callable whose answers the test changes between requests."""

    def __init__(self, **states: bool) -> None:
        self.states = dict(states)
        self.calls = 0

    async def __call__(self) -> Mapping[str, bool]:
        self.calls += 1
        return dict(self.states)


async def serve(app: aiohttp.web.Application) -> AsyncIterator[str]:
    runner, port = await start_web_app(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def test_healthz_answers_ok_with_a_request_id(http: aiohttp.ClientSession) -> None:
    async for base in serve(build_web_app(Checks(redis=False))):
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
            generated = resp.headers[server.REQUEST_ID_HEADER]
            assert len(generated) == 16
        async with http.get(f"{base}/healthz", headers={"X-Request-ID": "abc-123"}) as resp:
            assert resp.headers[server.REQUEST_ID_HEADER] == "abc-123"
        # a header that is not a sane id is replaced, not echoed
        async with http.get(f"{base}/healthz", headers={"X-Request-ID": "x" * 200}) as resp:
            assert resp.headers[server.REQUEST_ID_HEADER] != "x" * 200
        async with http.get(f"{base}/nope") as resp:
            assert resp.status == 404


async def test_readyz_follows_the_checks(http: aiohttp.ClientSession) -> None:
    checks = Checks(knowledge=True, redis=False, slack=False)
    async for base in serve(build_web_app(checks)):
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["ready"] is False
        assert body["not_ready"] == ["redis", "slack"]
        assert body["checks"] == {"knowledge": True, "redis": False, "slack": False}

        checks.states["redis"] = True
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["not_ready"] == ["slack"]

        checks.states["slack"] = True
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body == {"ready": True, "checks": dict(checks.states), "not_ready": []}
        assert checks.calls == 3  # asked on every probe, never cached


async def test_readyz_without_checks_is_ready(http: aiohttp.ClientSession) -> None:
    async for base in serve(build_web_app()):
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["ready"] is True


async def test_readyz_is_503_when_a_check_raises_or_hangs(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "redis://:s3cret-pass@redis:6379/0"

    async def broken() -> Mapping[str, bool]:
        raise ConnectionError(f"cannot reach {secret}")

    async for base in serve(build_web_app(broken)):
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            text = await resp.text()
        assert json.loads(text) == {
            "ready": False,
            "not_ready": ["readiness"],
            "error": "ConnectionError",
        }
        assert "s3cret" not in text

    never = asyncio.Event()

    async def hanging() -> Mapping[str, bool]:
        await never.wait()
        return {}

    monkeypatch.setattr(server, "READINESS_TIMEOUT", 0.2)
    async for base in serve(build_web_app(hanging)):
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "checks timed out"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_exposes_the_default_registry(http: aiohttp.ClientSession) -> None:
    label = "test-" + secrets.token_hex(4)  # a fresh series: starts from nothing
    async for base in serve(build_web_app()):
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            before = _samples(await resp.text())

        obs.QUESTIONS.labels(kind=label).inc()
        obs.QUESTIONS.labels(kind=label).inc()
        obs.EXPLANATIONS.labels(source=label, outcome="ok").inc()
        obs.EXPLAIN_SECONDS.labels(source=label).observe(0.3)
        obs.EXPLAIN_SECONDS.labels(source=label).observe(7.0)
        obs.CACHE_HITS.labels(cache=label).inc(3)
        obs.CACHE_MISSES.labels(cache=label).inc()
        obs.BYTES_FETCHED.labels(source=label).inc(1234)
        obs.ERRORS.labels(kind=label).inc()

        async with http.get(f"{base}/metrics") as resp:
            after = _samples(await resp.text())

    assert ("dockwise_questions_total", (("kind", label),)) not in before
    assert after[("dockwise_questions_total", (("kind", label),))] == 2
    assert after[("dockwise_explanations_total", (("outcome", "ok"), ("source", label)))] == 1
    assert after[("dockwise_explain_seconds_count", (("source", label),))] == 2
    assert after[("dockwise_explain_seconds_sum", (("source", label),))] == pytest.approx(7.3)
    assert after[("dockwise_explain_seconds_bucket", (("le", "0.5"), ("source", label)))] == 1
    assert after[("dockwise_explain_seconds_bucket", (("le", "10.0"), ("source", label)))] == 2
    assert after[("dockwise_cache_hits_total", (("cache", label),))] == 3
    assert after[("dockwise_cache_misses_total", (("cache", label),))] == 1
    assert after[("dockwise_bytes_fetched_total", (("source", label),))] == 1234
    assert after[("dockwise_errors_total", (("kind", label),))] == 1
    # the process collectors of the default registry are there too
    assert any(name == "process_cpu_seconds_total" for name, _ in after) or sys.platform != "linux"


# --------------------------------------------------------------------------- logging


def _fake_secrets() -> dict[str, str]:
    """Token-shaped values, made at run time (nothing secret-looking lives in the repo)."""
    alnum = string.ascii_letters + string.digits

    def rand(n: int) -> str:
        return "".join(secrets.choice(alnum) for _ in range(n))

    return {
        "SLACK_BOT_TOKEN": "xox" + "b-" + "-".join([rand(12), rand(13), rand(24)]),
        "SLACK_APP_TOKEN": "xa" + "pp-1-" + rand(11) + "-" + rand(13) + "-" + rand(40),
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "DISCORD_TOKEN": ".".join([rand(26), rand(6), rand(38)]),
        "DOCKWISE_REDIS_URL": f"redis://:{rand(20)}@redis:6379/0",
    }


LOG_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    from bot.observability import bind_correlation_id, configure_logging, get_logger

    configure_logging(json_output=None if len(sys.argv) < 2 else sys.argv[1] == "json")
    log = get_logger("dockwise.test")
    env = os.environ
    redis_password = env["DOCKWISE_REDIS_URL"].split(":")[2].split("@")[0]
    with bind_correlation_id("req-42"):
        log.info("slack event", channel="C123", token=env["SLACK_BOT_TOKEN"],
                 headers={"Authorization": "Bearer " + env["SLACK_APP_TOKEN"], "Accept": "json"})
        log.info("said " + env["DISCORD_TOKEN"] + " in chat", user="alice")
        logging.getLogger("redis.client").warning("connecting to %s", env["DOCKWISE_REDIS_URL"])
        log.warning("retrying", attempt=2, detail="password was " + redis_password)
    with bind_correlation_id() as cid:
        print(cid, file=sys.stdout, flush=True)
        try:
            raise RuntimeError("signature " + env["SLACK_SIGNING_SECRET"] + " rejected")
        except RuntimeError:
            log.exception("handler failed")
    log.info("outside any request", items=[1, 2])
    """
)


def _secret_env() -> tuple[dict[str, str], dict[str, str]]:
    fake = _fake_secrets()
    env = {k: v for k, v in os.environ.items() if k not in fake}
    env.update(fake)
    env["PYTHONPATH"] = str(ROOT)
    return env, fake


def _redis_password(url: str) -> str:
    return url.split(":")[2].split("@")[0]


def test_logs_are_json_lines_with_correlation_ids_and_no_secrets() -> None:
    env, fake = _secret_env()
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    stderr = proc.stderr
    for value in [*fake.values(), _redis_password(fake["DOCKWISE_REDIS_URL"])]:
        assert value not in stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    events = {line["event"].split(" ")[0]: line for line in lines}
    assert len(lines) == 6

    slack = events["slack"]
    assert slack["correlation_id"] == "req-42"
    assert slack["level"] == "info"
    assert slack["logger"] == "dockwise.test"
    assert slack["channel"] == "C123"
    assert slack["token"] == "***"
    assert slack["headers"] == {"Authorization": "***", "Accept": "json"}
    assert "timestamp" in slack

    assert events["said"]["event"] == "said *** in chat"
    assert events["said"]["user"] == "alice"
    redis_line = events["connecting"]  # a standard-library record, same handler
    assert redis_line["event"] == "connecting to redis://:***@redis:6379/0"
    assert redis_line["correlation_id"] == "req-42"
    assert redis_line["logger"] == "redis.client"
    assert redis_line["level"] == "warning"
    assert events["retrying"]["detail"] == "password was ***"
    assert events["retrying"]["attempt"] == 2

    failed = events["handler"]
    assert failed["correlation_id"] == proc.stdout.strip()
    assert failed["correlation_id"] != "req-42"
    assert "RuntimeError: signature *** rejected" in failed["exception"]
    assert "correlation_id" not in events["outside"]
    assert events["outside"]["items"] == [1, 2]


def test_logs_on_a_terminal_are_readable_and_masked() -> None:
    env, fake = _secret_env()
    child = pexpect.spawn(
        sys.executable,
        ["-c", LOG_SCRIPT],
        env=env,
        cwd=str(ROOT),
        timeout=60,
        encoding="utf-8",
    )
    child.expect(pexpect.EOF)
    child.close()
    output = child.before or ""
    assert child.exitstatus == 0, output
    for value in fake.values():
        assert value not in output
    assert "{" + '"event"' not in output  # not JSON on a terminal
    slack_line = next(line for line in output.splitlines() if "slack event" in line)
    assert "[info" in slack_line
    assert "correlation_id=req-42" in slack_line
    assert "token=***" in slack_line
    assert "said *** in chat" in output
    assert "RuntimeError: signature *** rejected" in output


def test_masker_hides_secret_shapes_in_any_value() -> None:
    fake = _fake_secrets()
    masker = obs.SecretMasker({"DOCKWISE_REDIS_URL": fake["DOCKWISE_REDIS_URL"]})
    event = {
        "event": "hello",
        "password": 1234,
        "api_key": "k",
        "note": None,
        "nested": {"deep": [{"client_secret": "abc", "ok": "fine"}]},
        "url": "https://user:pa55word@registry.example/v2/",
        "blob": b"auth Basic dXNlcjpwYXNzd29yZA==",
        "slack": "got " + fake["SLACK_BOT_TOKEN"] + ".",
        "_record": "left alone",
    }
    out = masker(None, "info", dict(event))
    assert out["event"] == "hello"
    assert out["password"] == "***"
    assert out["api_key"] == "***"
    assert out["note"] is None
    assert out["nested"] == {"deep": [{"client_secret": "***", "ok": "fine"}]}
    assert out["url"] == "https://user:***@registry.example/v2/"
    assert out["blob"] == "auth Basic ***"
    assert out["slack"] == "got ***."
    assert out["_record"] == "left alone"
    assert masker.mask_text("at " + fake["DOCKWISE_REDIS_URL"]) == "at redis://:***@redis:6379/0"
    password = _redis_password(fake["DOCKWISE_REDIS_URL"])
    assert masker.mask_text(f"pw={password}") == "pw=***"
    masker.add("later-registered-value")
    assert masker.mask_text("x later-registered-value y") == "x *** y"
    assert masker.mask_text("short abc") == "short abc"


def test_secrets_from_a_dotenv_file_are_masked_once_registered(tmp_path: Path) -> None:
    """Values read from .env never reach os.environ: register_secrets_from covers them."""
    signing = secrets.token_hex(16)
    password = secrets.token_hex(10)
    (tmp_path / ".env").write_text(
        f"SLACK_SIGNING_SECRET={signing}\nDOCKWISE_REDIS_URL=redis://:{password}@cache:6379/1\n"
    )
    script = textwrap.dedent(
        """
        from adapters.slack import SlackSettings
        from bot.config import Settings
        from bot.observability import configure_logging, get_logger, register_secrets_from

        configure_logging(json_output=True)
        settings, slack = Settings(), SlackSettings()
        register_secrets_from(settings)
        register_secrets_from(slack)
        configure_logging(json_output=True)  # a second call keeps what was registered
        log = get_logger("dockwise.test")
        log.info("signature", got=slack.slack_signing_secret.get_secret_value() + "!")
        log.info("redis at " + settings.redis_url.get_secret_value().replace("redis://", ""))
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SLACK_SIGNING_SECRET", "DOCKWISE_REDIS_URL")
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert signing not in proc.stderr and password not in proc.stderr
    first, second = (json.loads(line) for line in proc.stderr.splitlines())
    assert first["got"] == "***!"
    assert second["event"] == "redis at :***@cache:6379/1"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_track_explanation_times_and_counts_outcomes() -> None:
    source = "track-" + secrets.token_hex(4)
    with obs.track_explanation(source):
        pass
    with pytest.raises(ImageNotFound), obs.track_explanation(source):
        raise ImageNotFound("no such image")
    with pytest.raises(KeyError), obs.track_explanation(source):
        raise KeyError("bug")
    errors_before = _value("dockwise_errors_total", kind="timeout")
    with pytest.raises(TimedOut), obs.track_explanation(source):
        raise TimedOut("too slow")

    explained = "dockwise_explanations_total"
    assert _value(explained, source=source, outcome="ok") == 1
    assert _value(explained, source=source, outcome=ImageNotFound.kind) == 1
    assert _value(explained, source=source, outcome="internal") == 1
    assert _value(explained, source=source, outcome=TimedOut.kind) == 1
    assert _value("dockwise_explain_seconds_count", source=source) == 4
    assert _value("dockwise_errors_total", kind="timeout") == errors_before + 1

    kind = "kind-" + secrets.token_hex(4)
    obs.count_question(kind)
    assert _value("dockwise_questions_total", kind=kind) == 1
