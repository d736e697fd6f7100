"""Reference parsing: expectations come from Docker's reference grammar and the Docker
CLI's documented normalisation, written out by hand (not computed by the parser)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidReference
from bot.image.reference import Reference, parse_reference

D256 = "sha256:" + "a" * 64
D512 = "sha512:" + "0123456789abcdef" * 8

GOOD: list[tuple[str, Reference, str, str]] = [
    # text, expected, str(), familiar
    (
        "nginx",
        Reference("docker.io", "library/nginx", "latest"),
        "docker.io/library/nginx:latest",
        "nginx:latest",
    ),
    (
        "nginx:1.25-alpine",
        Reference("docker.io", "library/nginx", "1.25-alpine"),
        "docker.io/library/nginx:1.25-alpine",
        "nginx:1.25-alpine",
    ),
    (
        "library/nginx",
        Reference("docker.io", "library/nginx", "latest"),
        "docker.io/library/nginx:latest",
        "nginx:latest",
    ),
    (
        "docker.io/nginx",
        Reference("docker.io", "library/nginx", "latest"),
        "docker.io/library/nginx:latest",
        "nginx:latest",
    ),
    (
        "index.docker.io/library/python:3.12-slim",
        Reference("docker.io", "library/python", "3.12-slim"),
        "docker.io/library/python:3.12-slim",
        "python:3.12-slim",
    ),
    (
        "bitnami/redis:7.2",
        Reference("docker.io", "bitnami/redis", "7.2"),
        "docker.io/bitnami/redis:7.2",
        "bitnami/redis:7.2",
    ),
    (
        "user/repo/sub",
        Reference("docker.io", "user/repo/sub", "latest"),
        "docker.io/user/repo/sub:latest",
        "user/repo/sub:latest",
    ),
    (
        "ghcr.io/owner/app:v1",
        Reference("ghcr.io", "owner/app", "v1"),
        "ghcr.io/owner/app:v1",
        "ghcr.io/owner/app:v1",
    ),
    (
        "quay.io/app",
        Reference("quay.io", "app", "latest"),
        "quay.io/app:latest",
        "quay.io/app:latest",
    ),
    (
        "localhost/app",
        Reference("localhost", "app", "latest"),
        "localhost/app:latest",
        "localhost/app:latest",
    ),
    (
        "localhost:5000/a/b:c",
        Reference("localhost:5000", "a/b", "c"),
        "localhost:5000/a/b:c",
        "localhost:5000/a/b:c",
    ),
    (
        "127.0.0.1:5000/app",
        Reference("127.0.0.1:5000", "app", "latest"),
        "127.0.0.1:5000/app:latest",
        "127.0.0.1:5000/app:latest",
    ),
    (
        "[::1]:5000/app:x",
        Reference("[::1]:5000", "app", "x"),
        "[::1]:5000/app:x",
        "[::1]:5000/app:x",
    ),
    (
        "[2001:db8::1]/app",
        Reference("[2001:db8::1]", "app", "latest"),
        "[2001:db8::1]/app:latest",
        "[2001:db8::1]/app:latest",
    ),
    (
        "myhost:5000/app",
        Reference("myhost:5000", "app", "latest"),
        "myhost:5000/app:latest",
        "myhost:5000/app:latest",
    ),
    (
        "Registry.Example.COM/app",
        Reference("Registry.Example.COM", "app", "latest"),
        "Registry.Example.COM/app:latest",
        "Registry.Example.COM/app:latest",
    ),
    (
        f"nginx@{D256}",
        Reference("docker.io", "library/nginx", None, D256),
        f"docker.io/library/nginx@{D256}",
        f"nginx@{D256}",
    ),
    (
        f"nginx:1.25@{D256}",
        Reference("docker.io", "library/nginx", "1.25", D256),
        f"docker.io/library/nginx:1.25@{D256}",
        f"nginx:1.25@{D256}",
    ),
    (
        f"example.com:443/a@{D512}",
        Reference("example.com:443", "a", None, D512),
        f"example.com:443/a@{D512}",
        f"example.com:443/a@{D512}",
    ),
    (
        "foo/a__b.c--d_e:TAG_1.x-y",
        Reference("docker.io", "foo/a__b.c--d_e", "TAG_1.x-y"),
        "docker.io/foo/a__b.c--d_e:TAG_1.x-y",
        "foo/a__b.c--d_e:TAG_1.x-y",
    ),
    (
        "  alpine:3.20\n",
        Reference("docker.io", "library/alpine", "3.20"),
        "docker.io/library/alpine:3.20",
        "alpine:3.20",
    ),
]


@pytest.mark.parametrize(("text", "expected", "normal", "familiar"), GOOD)
def test_good_references(text: str, expected: Reference, normal: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert ref == expected
    assert str(ref) == normal
    assert ref.familiar == familiar


def test_properties() -> None:
    ref = parse_reference("python:3.12")
    assert ref.repository == "library/python"
    assert ref.name == "docker.io/library/python"
    assert ref.familiar_name == "python"
    assert ref.reference == "3.12"
    assert parse_reference(f"python:3.12@{D256}").reference == D256


BAD: list[tuple[str, str]] = [
    # text, a piece the one-line message must contain
    ("", "empty reference"),
    ("   ", "empty reference"),
    ("Nginx", "must be lowercase"),
    ("MyUser/app", "must be lowercase"),
    ("ghcr.io/Owner/app", "must be lowercase"),
    ("nginx:-bad", "invalid tag"),
    ("nginx:.bad", "invalid tag"),
    ("nginx:", "invalid tag"),
    ("nginx:a b", "invalid tag"),
    ("nginx:" + "t" * 129, "invalid tag"),
    ("nginx:tag:more", "invalid"),
    ("nginx@sha256:abc", "invalid digest"),
    ("nginx@sha256:" + "A" * 64, "invalid digest"),
    ("nginx@sha256:" + "a" * 63, "invalid digest"),
    ("nginx@md5:" + "a" * 32, "invalid digest"),
    ("nginx@" + "a" * 64, "invalid digest"),
    ("nginx@", "invalid digest"),
    (f"nginx@{D256}@{D256}", "invalid digest"),
    ("a" * 64, "image ID"),
    ("-nginx", "invalid repository name"),
    ("nginx-", "invalid repository name"),
    ("foo/bar/", "invalid repository name"),
    ("foo//bar", "invalid repository name"),
    ("a___b", "invalid repository name"),
    ("a._b", "invalid repository name"),
    ("ngi nx", "invalid repository name"),
    ("héllo", "invalid repository name"),
    ("foo_bar.com/app", "invalid registry host"),
    ("a.b-c__d/e", "invalid registry host"),
    ("-example.com/app", "invalid registry host"),
    ("example.com:port/app", "invalid registry host"),
    ("[zz::1]/app", "invalid registry host"),
    ("localhost:/app", "invalid registry host"),
    (":tag", "missing repository name"),
    (f"@{D256}", "missing repository name"),
    ("example.com/" + "a" * 244, "name too long (256 > 255)"),
    ("x/" + "a" * 300, "name too long (312 > 255)"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert len(message) < 300


def test_longest_valid_name() -> None:
    # "example.com/" is 12 characters: 243 more make exactly 255.
    ref = parse_reference("example.com/" + "a" * 243)
    assert len(ref.name) == 255


# --------------------------------------------------------------------------- properties

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)


@st.composite
def domains(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["dns", "localhost", "ipv6", "ipv4"]))
    if kind == "dns":
        host = ".".join(draw(st.lists(_label, min_size=2, max_size=3)))
    elif kind == "localhost":
        host = "localhost"
    elif kind == "ipv6":
        host = (
            "[" + draw(st.from_regex(r"[0-9a-f]{1,4}(::?[0-9a-f]{1,4}){1,4}", fullmatch=True)) + "]"
        )
    else:
        host = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    if draw(st.booleans()):
        host += f":{draw(st.integers(1, 65535))}"
    return host


_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digests = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: "sha256:" + h)


@st.composite
def references(draw: st.DrawFn) -> tuple[str, str | None, str, str | None, str | None]:
    domain = draw(st.none() | domains())
    components = draw(st.lists(path_components(), min_size=1, max_size=3))
    if domain is None and len(components) > 1:
        # A first component with "." would be read as a registry host (Docker's rule).
        components[0] = components[0].replace(".", "-")
    path = "/".join(components)
    tag = draw(st.none() | _tags)
    digest = draw(st.none() | _digests)
    text = (f"{domain}/" if domain else "") + path
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return text, domain, path, tag, digest


@given(references())
def test_generated_valid_references_parse(
    case: tuple[str, str | None, str, str | None, str | None],
) -> None:
    text, domain, path, tag, digest = case
    ref = parse_reference(text)
    if domain is None:
        assert ref.domain == "docker.io"
        assert ref.path == (path if "/" in path else f"library/{path}")
    else:
        assert ref.domain == domain
        assert ref.path == path
    assert ref.digest == digest
    assert ref.tag == (tag if tag or digest else "latest")


@given(references())
def test_round_trip(case: tuple[str, str | None, str, str | None, str | None]) -> None:
    ref = parse_reference(case[0])
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref


@given(st.text(max_size=300))
def test_junk_only_raises_invalid_reference(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert "\n" not in str(exc)
    else:
        assert parse_reference(str(ref)) == ref


@given(st.text(alphabet="abcXYZ019:/@._-[]", max_size=60))
def test_reference_alphabet_junk(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return
    assert parse_reference(str(ref)) == ref


def test_familiar_keeps_domain_when_needed() -> None:
    ref = parse_reference("docker.io/a.b/c")
    assert ref == Reference("docker.io", "a.b/c", "latest")
    assert ref.familiar == "docker.io/a.b/c:latest"
    assert parse_reference(ref.familiar) == ref
