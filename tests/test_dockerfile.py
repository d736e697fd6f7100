"""Explaining Dockerfiles: the real BuildKit parser, the real hadolint, dockwise's DW rules.

The test Dockerfiles live in tests/data/dockerfiles/ with their expected findings written by
hand in expected.yaml ([line, code] pairs as hadolint reports them, plus DW codes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.dockerfile_explain import (
    HADOLINT_PLAIN,
    MAX_DOCKERFILE_BYTES,
    OWN_FINDINGS,
    decode_dockerfile,
    explain_dockerfile,
    parse_dockerfile,
    parser_directives,
    run_hadolint,
)
from bot.engine import Engine
from bot.errors import InvalidInput
from bot.intent import CompareIntent, DockerfileIntent, parse_dockerfile_or_compare
from bot.knowledge import KnowledgeBase
from bot.reply import ReplyKind

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "dockerfiles"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((DATA / "expected.yaml").read_text())
FILES = sorted(DATA.glob("*.Dockerfile"))


def articles() -> set[str]:
    return {p.stem for p in (ROOT / "knowledge").glob("*.md")}


def explain(path: Path) -> Any:
    import asyncio

    return asyncio.run(explain_dockerfile(path.read_text()))


def test_there_are_at_least_40_test_dockerfiles_each_with_expectations() -> None:
    assert len(FILES) >= 40
    assert {p.stem for p in FILES} == set(EXPECTED)


def test_every_dw_code_is_expected_somewhere() -> None:
    expected_codes = set()
    for entry in EXPECTED.values():
        for key in ("findings", "inspected"):
            expected_codes |= {code for _line, code in entry.get(key, [])}
    assert set(OWN_FINDINGS) <= expected_codes


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_findings_match_the_expected_lines_and_codes(path: Path) -> None:
    reply = explain(path)
    assert reply.kind is ReplyKind.IMAGE
    entry = EXPECTED[path.stem]
    got = sorted((f["line"], f["code"]) for f in reply.data["findings"])
    assert got == sorted((line, code) for line, code in entry["findings"])
    note = "hadolint could not parse" in reply.plain_text()
    assert note is bool(entry.get("hadolint_note", False))
    known = articles()
    for finding in reply.data["findings"]:
        assert set(finding) == {"line", "code", "message", "article"}
        message = finding["message"]
        assert message and "\n" not in message and message.rstrip().endswith((".", ")"))
        if finding["code"].startswith("SC"):
            assert finding["article"] is None  # ShellCheck remarks: no article covers them
        else:
            assert finding["article"] in known
        if finding["code"] in HADOLINT_PLAIN:
            assert message == HADOLINT_PLAIN[finding["code"]][0]
        # every finding is shown in the text, with its article
        assert f"line {finding['line']} `{finding['code']}`" in reply.plain_text()


def test_every_mapped_article_exists_or_is_being_written() -> None:
    known = articles()
    for code, (sentence, article) in {**HADOLINT_PLAIN, **OWN_FINDINGS}.items():
        assert article in known, code
        assert sentence.endswith(".") and "\n" not in sentence, code


def test_json_has_exactly_stages_findings_final_stage() -> None:
    reply = explain(DATA / "32-multi-stage-scratch.Dockerfile")
    data = json.loads(json.dumps(reply.data))
    assert set(data) == {"stages", "findings", "final_stage", "lint"}
    assert [s["name"] for s in data["stages"]] == ["build", None]
    build, final = data["stages"]
    assert build["base"] == "golang:1.22" and build["base_kind"] == "image"
    assert [ly["instruction"] for ly in build["layers"]] == ["COPY", "RUN"]
    assert {k: data["final_stage"][k] for k in final} == final
    fs = data["final_stage"]
    assert fs["base_kind"] == "scratch" and fs["copies_from"] == ["build"]
    assert fs["user"] == "65532" and fs["runs_as_root"] is False
    assert fs["entrypoint"] == {"form": "exec", "words": ["/app"], "line": 10}
    assert fs["cmd"] is None
    assert fs["stages_used"] == ["build", "stage 2"] and fs["stages_unused"] == []
    assert "no OS user space" in reply.plain_text()


def test_unused_stage_is_named_and_continuations_are_joined() -> None:
    reply = explain(DATA / "47-continuations-multistage-unused.Dockerfile")
    fs = reply.data["final_stage"]
    assert fs["stages_unused"] == ["docs"] and fs["stages_used"] == ["tools", "stage 3"]
    tools = reply.data["stages"][0]
    assert tools["layers"] == [{"line": 2, "instruction": "RUN"}]
    parsed = parse_dockerfile((DATA / "47-continuations-multistage-unused.Dockerfile").read_text())
    run = parsed.stages[0].instructions[0]
    assert (run.line, run.end_line) == (2, 3)
    assert "Stage(s) docs are not used by it" in reply.body


def test_user_and_start_are_inherited_from_an_earlier_stage() -> None:
    reply = explain(DATA / "48-stage-from-stage.Dockerfile")
    fs = reply.data["final_stage"]
    assert fs["base_kind"] == "stage" and fs["builds_on_stage"] == "base"
    assert fs["root_base"] == "debian:bookworm-slim"
    assert fs["user"] == "10001" and fs["user_set_in_dockerfile"] is True
    assert fs["cmd"]["form"] == "exec" and fs["cmd"]["words"] == ["/app"]


def test_build_args_in_from_are_substituted_or_reported_unresolved() -> None:
    resolved = explain(DATA / "40-build-arg-base.Dockerfile").data["stages"][0]
    assert resolved["from"] == "${BASE}" and resolved["base"] == "debian:bookworm-slim"
    assert resolved["base_kind"] == "image"
    unresolved = explain(DATA / "41-build-arg-without-default.Dockerfile").data["stages"][0]
    assert unresolved["base_kind"] == "unresolved" and unresolved["name"] == "final"
    parsed = parse_dockerfile("ARG V=3.20\nARG R\nFROM alpine:${V} AS a\nFROM ${R:-debian}:12\n")
    assert [s.base_resolved for s in parsed.stages] == ["alpine:3.20", "debian:12"]


def test_heredoc_escape_directive_and_syntax_line() -> None:
    heredoc = parse_dockerfile((DATA / "38-heredoc.Dockerfile").read_text())
    run = heredoc.stages[0].instructions[0]
    assert run.cmd == "RUN" and run.heredocs == 1 and (run.line, run.end_line) == (3, 6)
    assert heredoc.directives == {"syntax": "docker/dockerfile:1"}
    body = explain(DATA / "38-heredoc.Dockerfile").body
    assert "Parser directives: syntax=docker/dockerfile:1." in body
    escaped_text = (DATA / "39-escape-directive.Dockerfile").read_text()
    escaped = parse_dockerfile(escaped_text)
    assert escaped.directives == {"escape": "`"}
    run = escaped.stages[0].instructions[0]
    assert (run.line, run.end_line) == (3, 4) and "two > /words" in run.value[0]
    assert parser_directives("FROM x\n# syntax=y\n") == {}


@pytest.mark.parametrize(
    "header",
    [
        "# escape=`\n",
        "#ESCAPE = `\n",
        "   # escape=`\n",
        "# syntax=docker/dockerfile:1\n# escape=`\n",
        "# unknowndirective=value\n# escape=`\n",  # a comment: escape is one too
        "# just a comment\n# escape=`\n",
        "\n# escape=`\n",
        "# foo_bar=1\n# escape=`\n",
    ],
)
def test_directives_shown_are_the_ones_buildkit_applies(header: str) -> None:
    """The escape directive we report is in effect exactly when BuildKit's parser uses it:
    with it, the backtick joins the RUN's two lines; without it, `y` is an instruction."""
    import dockerfile

    text = header + "FROM debian:12\nRUN echo x `\n y\n"
    applied = len(dockerfile.parse_string(text)) == 2
    assert ("escape" in parser_directives(text)) is applied
    if applied:
        assert parser_directives(text)["escape"] == "`"
        assert parse_dockerfile(text).directives.get("escape") == "`"


def test_exposed_ports_workdir_and_exec_form() -> None:
    reply = explain(DATA / "42-expose-and-workdir.Dockerfile")
    fs = reply.data["final_stage"]
    assert fs["exposed_ports"] == ["80/tcp", "443/udp"] and fs["workdir"] == "/srv"
    assert fs["entrypoint"]["words"] == ["/srv/server"]
    assert fs["cmd"]["words"] == ["--port", "80"]
    assert "80/tcp, 443/udp" in reply.plain_text() and "exec form" in reply.body


def test_shell_form_says_sh_is_pid_1() -> None:
    reply = explain(DATA / "06-shell-form-cmd.Dockerfile")
    cmd = reply.data["final_stage"]["cmd"]
    assert cmd["form"] == "shell" and cmd["words"] == ["/bin/sh", "-c", "python app.py"]
    assert "/bin/sh is PID 1" in reply.body


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"FROM debian\n" + b"#" * MAX_DOCKERFILE_BYTES, "at most 65,536"),
        (b"FROM debian\x00\x01\x02", "binary"),
        (b"FROM caf\xe9\n", "not UTF-8"),
        (b"   \n\n", "empty"),
        (b"FROM debian\n\x1b[31mRUN x\n", "binary"),
        ("FROM debian:12\nUSER 1\n".encode("utf-16"), "UTF-16"),
        ("FROM debian:12\nUSER 1\n".encode("utf-16-be"), "binary"),  # no BOM: just NULs
    ],
)
def test_bad_input_is_one_clear_line(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_dockerfile(decode_dockerfile(data))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hello world, how are you?\n", "not a Dockerfile instruction"),
        ("RUN echo hi\nFROM debian\n", "before any FROM"),
        ("ARG X=1\n", "No FROM"),
        ("# just a comment\n", "couldn't parse"),
        ("FROM debian:12 AS\nUSER 1\n", "FROM takes an image and optionally `AS name`"),
        ("FROM debian:12 AS a AS b\n", "not 5 words"),
        ("FROM debian 12\n", "not 2 words"),
        ("FROM debian:12 AS 2fast\n", "not a valid build stage name"),
        ("FROM debian:12 AS my/stage\n", "not a valid build stage name"),
    ],
)
def test_unparsable_text_is_one_clear_line(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_dockerfile(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_hadolint_is_one_line_and_stages_still_explained() -> None:
    import asyncio

    text = (DATA / "03-apt-unpinned.Dockerfile").read_text()
    findings, note = run_hadolint(text, binary="/nonexistent/hadolint")
    assert findings == [] and note is not None and "hadolint could not run" in note
    reply = asyncio.run(
        explain_dockerfile(text, lint=lambda t: run_hadolint(t, binary="/nonexistent/hadolint"))
    )
    assert reply.kind is ReplyKind.IMAGE and reply.data is not None
    assert reply.data["stages"][0]["layers"] == [{"line": 2, "instruction": "RUN"}]
    assert "hadolint could not run" in reply.plain_text()
    # JSON readers are told too: no findings here does not mean lint-clean.
    assert reply.data["lint"]["ran"] is False
    assert "hadolint could not run" in reply.data["lint"]["note"]
    ran = asyncio.run(explain_dockerfile(text, lint=run_hadolint))
    assert ran.data is not None and ran.data["lint"] == {"ran": True, "note": None}


def test_failing_hadolint_is_one_line() -> None:
    findings, note = run_hadolint("FROM debian:12\n", binary="/bin/false")
    assert findings == [] and note is not None and note.startswith("hadolint failed")


def test_hadolint_codes_and_lines_are_hadolints_own() -> None:
    """The same file through the hadolint CLI directly gives the same (line, code) pairs."""
    path = DATA / "03-apt-unpinned.Dockerfile"
    from bot.dockerfile_explain import hadolint_path

    exe = hadolint_path()
    assert exe is not None
    raw = subprocess.run(
        [exe, "--no-fail", "-f", "json", str(path)], capture_output=True, text=True, check=True
    )
    direct = sorted((item["line"], item["code"]) for item in json.loads(raw.stdout))
    ours, _ = run_hadolint(path.read_text())
    assert sorted((f.line, f.code) for f in ours) == direct


# --------------------------------------------------------------------------- intent


@pytest.mark.parametrize(
    "text",
    [
        "can you explain this?\n```dockerfile\nFROM debian:12\nUSER 1000\n```",
        "```Dockerfile\nFROM debian:12\n```",
        "```\n# syntax=docker/dockerfile:1\nFROM debian:12\n```",
        "```\nARG V=12\nFROM debian:${V}\n```",
        "why is this big?\n```\nFROM debian:12\nRUN apt-get update\n",  # unclosed fence
        "```\n# build stage\n\n# (Go)\nFROM debian:12 AS build\n```",  # comments first
    ],
)
def test_fenced_dockerfiles_are_recognised(text: str) -> None:
    intent = parse_dockerfile_or_compare(text)
    assert isinstance(intent, DockerfileIntent)
    assert "FROM debian:" in intent.text and "```" not in intent.text


@pytest.mark.parametrize(
    "text",
    [
        "```\nls -la /var/lib\n```",
        "```python\nprint('FROM x')\n```",
        "what is a Dockerfile?",
        "```\n# list it\nls -la\n```",
        "```\n#!/bin/sh\necho FROM x\n```",
    ],
)
def test_other_code_blocks_are_not_dockerfiles(text: str) -> None:
    assert parse_dockerfile_or_compare(text) is None


@pytest.mark.parametrize(
    ("text", "a", "b"),
    [
        ("compare debian:12 and debian:12-slim", "debian:12", "debian:12-slim"),
        (["@dockwise", "compare nginx with nginx:alpine"][1], "nginx", "nginx:alpine"),
        ("Compare python:3.12 to python:3.12-slim?", "python:3.12", "python:3.12-slim"),
        ("alpine:3.20 vs debian:bookworm-slim", "alpine:3.20", "debian:bookworm-slim"),
        ("/image-explain alpine vs debian", "alpine", "debian"),
        ("`ghcr.io/a/b:1` vs. `ghcr.io/a/b:2`", "ghcr.io/a/b:1", "ghcr.io/a/b:2"),
        ("compare alpine debian", "alpine", "debian"),
        ("compare alpine:3.20 with debian:12 please", "alpine:3.20", "debian:12"),
        ("Compare alpine:3.20 and debian:12, please?", "alpine:3.20", "debian:12"),
        ("what's the difference between alpine:3.20 and debian:12?", "alpine:3.20", "debian:12"),
        ("whats the difference between alpine:3.20 and debian:12", "alpine:3.20", "debian:12"),
        ("What’s the difference between alpine:3.20 and debian:12?", "alpine:3.20", "debian:12"),
        (
            "difference between `ghcr.io/a/b:1` and `ghcr.io/a/b:2`",
            "ghcr.io/a/b:1",
            "ghcr.io/a/b:2",
        ),
    ],
)
def test_compare_requests_are_recognised(text: str, a: str, b: str) -> None:
    assert parse_dockerfile_or_compare(text) == CompareIntent(a, b)


@pytest.mark.parametrize(
    "text",
    [
        "alpine vs slim",
        "alpine vs slim?",
        "cmd vs entrypoint",
        "CMD vs ENTRYPOINT?",
        "compare containers and vms",
        "musl vs glibc",
        "compare alpine and slim",
        "copy vs add",
        "what's the difference between alpine and debian?",
        "what is the difference between cmd and entrypoint?",
    ],
)
def test_questions_with_vs_stay_questions(text: str) -> None:
    assert parse_dockerfile_or_compare(text) is None


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


async def test_engine_handle_routes_a_fenced_dockerfile(kb: KnowledgeBase, tmp_path: Path) -> None:
    from bot.config import Settings
    from bot.image.explain import Explainer

    # Only an unused registry is allowed: the base (on Docker Hub) is refused at once, with
    # or without network, and the explanation says it couldn't inspect it.
    settings = Settings(
        _env_file=None, cache_dir=tmp_path, registry_allowlist=["registry.invalid"], redis_url=None
    )
    engine = Engine(knowledge=kb, explainer=Explainer(settings))
    body = (DATA / "27-copy-all-before-pip.Dockerfile").read_text()
    # Longer than a question may be: a pasted Dockerfile is still read.
    padding = "\n".join(f"# comment line {i:04d} " + "x" * 40 for i in range(80))
    text = f"why is my build slow?\n```dockerfile\n{padding}\n{body}```"
    assert len(text) > 4000
    reply = await engine.handle(text)
    assert reply.kind is ReplyKind.IMAGE and reply.data is not None, reply.body
    codes = [f["code"] for f in reply.data["findings"]]
    assert codes == ["DW1002"]
    assert reply.data["stages"][0]["base_error"]  # refused by the allowlist, said in one line
    assert "Couldn't inspect the base" in reply.plain_text()
    await engine.aclose()


async def test_engine_handle_reports_a_bad_dockerfile_in_one_line(kb: KnowledgeBase) -> None:
    engine = Engine(knowledge=kb)
    reply = await engine.handle("```dockerfile\nRUN echo hi\n```")
    assert reply.kind is ReplyKind.ERROR and "before any FROM" in reply.body
    assert "\n" not in reply.body
    await engine.aclose()


# --------------------------------------------------------------------------- CLI


def dockwise(*args: str, stdin: bytes | None = None, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKWISE_CACHE_DIR=str(tmp))
    proc = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def test_cli_json_from_a_path(tmp_path: Path) -> None:
    path = DATA / "33-static-binary-on-debian.Dockerfile"
    result = dockwise("dockerfile", "--json", "--no-inspect", str(path), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert set(obj) == {"stages", "findings", "final_stage", "lint"}
    assert [(f["line"], f["code"]) for f in obj["findings"]] == [(6, "DW1004")]
    assert obj["findings"][0]["article"] == "from-scratch"


def test_cli_text_from_stdin(tmp_path: Path) -> None:
    text = (DATA / "03-apt-unpinned.Dockerfile").read_bytes()
    result = dockwise("dockerfile", "--no-inspect", "-", stdin=text, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Dockerfile: 1 stage, final image FROM debian:bookworm")
    for code in ("DL3008", "DL3009", "DL3015"):
        assert f"`{code}`" in result.stdout or code in result.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"FROM x\n" + b"# pad\n" * 12000, "64 KB"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary"),
        (b"this is not a dockerfile\n", "not a Dockerfile instruction"),
    ],
)
def test_cli_bad_files_are_one_line_exit_2(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(content)
    result = dockwise("dockerfile", str(path), tmp=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockwise: error:") and fragment in lines[0]


def test_cli_missing_file_and_directory(tmp_path: Path) -> None:
    for target, fragment in ((tmp_path / "nope", "cannot read"), (tmp_path, "is a directory")):
        result = dockwise("dockerfile", str(target), tmp=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- shell adapter


def test_shell_explains_a_file_and_a_pasted_fenced_dockerfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_shell import spawn

    # Bases on Docker Hub are refused at once (no multi-hundred-MB pulls where it is online).
    monkeypatch.setenv("DOCKWISE_REGISTRY_ALLOWLIST", "registry.invalid")
    child = spawn(tmp_path)
    child.sendline(f"dockerfile {DATA / '33-static-binary-on-debian.Dockerfile'}")
    child.expect_exact("Dockerfile: 2 stages, final image FROM debian:bookworm-slim")
    child.expect_exact("DW1004")
    child.expect_exact("dockwise> ")
    child.sendline("```dockerfile")
    for line in (DATA / "27-copy-all-before-pip.Dockerfile").read_text().splitlines():
        child.sendline(line)
    child.sendline("```")
    child.expect_exact("Dockerfile: 1 stage, final image FROM python:3.12-slim")
    child.expect_exact("DW1002")
    child.expect_exact("dockwise> ")
    child.sendline(f"dockerfile {tmp_path / 'missing'}")
    child.expect_exact("cannot read")
    child.expect_exact("dockwise> ")
    child.sendline("quit")
    child.expect_exact("bye")


def test_secret_values_never_reach_the_reply() -> None:
    import asyncio

    token = "ghp_" + "a1B2c3D4" * 5
    password = "hunter2-is-long"
    text = (
        f"FROM debian:bookworm\nARG DB_PASSWORD={password}\nENV GH_TOKEN={token}\n"
        f'USER 1000\nCMD ["app", "--db-password", "{password}", "--token", "{token}"]\n'
    )
    reply = asyncio.run(explain_dockerfile(text))
    shown = reply.plain_text() + json.dumps(reply.data)
    assert token not in shown and password not in shown
    assert reply.data is not None
    assert reply.data["final_stage"]["cmd"]["words"][2] == "<redacted>"
    assert "DL3064" in {f["code"] for f in reply.data["findings"]}


# --------------------------------------------------------------------------- fuzzing

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_INSTRUCTIONS = st.sampled_from(
    [
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ARG",
        "ENV",
        "USER",
        "CMD",
        "ENTRYPOINT",
        "EXPOSE",
        "WORKDIR",
        "SHELL",
        "ONBUILD",
        "LABEL",
        "HEALTHCHECK",
        "# syntax=x",
        "# escape=`",
        "",
    ]
)
_WORDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_INSTRUCTIONS, _WORDS), max_size=12))
def test_any_text_parses_or_is_one_clear_line(lines: list[tuple[str, str]]) -> None:
    text = "\n".join(f"{ins} {rest}" for ins, rest in lines)
    try:
        parsed = parse_dockerfile(decode_dockerfile(text))
    except InvalidInput as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert parsed.stages
    from bot.dockerfile_explain import DockerfileReport, own_findings, render_report

    reply = render_report(DockerfileReport(parsed, own_findings(parsed), None))
    assert set(reply.data or {}) == {"stages", "findings", "final_stage", "lint"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_one_clear_line(data: bytes) -> None:
    try:
        parse_dockerfile(decode_dockerfile(data))
    except InvalidInput as exc:
        assert "\n" not in str(exc) and str(exc)


def test_scratch_without_a_command_says_it_cannot_start() -> None:
    import asyncio

    reply = asyncio.run(explain_dockerfile("FROM scratch\nCOPY app /app\n", lint=run_hadolint))
    text = reply.plain_text()
    assert "scratch sets none" in text and "whatever the base image set" not in text


def test_no_user_on_an_uninspected_base_is_not_called_root() -> None:
    """Without inspecting the base, dockwise can't know its user (distroless :nonroot runs
    as 65532): JSON says unknown (null) and the text says root only "unless the base sets
    another". On scratch there is nothing to inherit: root, for sure."""
    from bot.dockerfile_explain import DW1001_UNINSPECTED

    reply = explain(DATA / "26-no-user.Dockerfile")
    assert reply.data is not None
    fs = reply.data["final_stage"]
    assert fs["user"] is None and fs["runs_as_root"] is None
    (finding,) = reply.data["findings"]
    assert (finding["code"], finding["message"]) == ("DW1001", DW1001_UNINSPECTED)
    text = reply.plain_text()
    assert "The container runs as root" not in text and "Runs as root" not in text
    assert "root unless the base sets another" in reply.body
    scratch = explain(DATA / "36-run-on-scratch.Dockerfile")
    assert scratch.data is not None and scratch.data["final_stage"]["runs_as_root"] is True
    assert "The container runs as root." in scratch.body
    assert [f["message"] for f in scratch.data["findings"] if f["code"] == "DW1001"] == [
        OWN_FINDINGS["DW1001"][0]
    ]
    assert "Built from stage 1, FROM `scratch`" in scratch.plain_text()


def test_windows_base_with_backtick_escape() -> None:
    """A Windows Dockerfile: the backtick joins the RUN's lines, the base brings a Windows
    user space (no C library, no uid 0), and no root/uid finding is made up."""
    reply = explain(DATA / "62-windows-escape-backtick.Dockerfile")
    assert reply.data is not None
    (stage,) = reply.data["stages"]
    assert stage["layers"] == [
        {"line": 4, "instruction": "RUN"},
        {"line": 6, "instruction": "COPY"},
    ]
    assert stage["entrypoint"]["words"] == ["C:\\app\\app.exe"]
    assert stage["workdir"] == "C:\\app"
    text = reply.plain_text()
    assert "a Windows user space" in text and "C library" not in text
    assert "ContainerAdministrator" in reply.body and "root" not in reply.body
    assert reply.data["findings"] == []
