"""Parsers against ground truth from the real tools (dpkg-query, sqlite3) and the recipes."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from bot.image.parsers import (
    count_apk_installed,
    count_dpkg_status,
    count_dpkg_status_d,
    count_rpm_sqlite,
    parse_os_release,
)
from bot.image.redact import REDACTED, Redactor, secret_name, secret_value

STATUSES = [
    "install ok installed",
    "install ok installed",
    "deinstall ok config-files",
    "install ok half-configured",
    "install ok installed",
    "purge ok not-installed",
    "hold ok installed",
    "install ok unpacked",
    "install ok installed",
]


def dpkg_status_text() -> str:
    stanzas = []
    for i, status in enumerate(STATUSES):
        stanzas.append(
            f"Package: pkg{i}\n"
            f"Status: {status}\n"
            "Priority: optional\n"
            "Architecture: amd64\n"
            f"Version: 1.{i}-1\n"
            "Description: a test package\n"
            " with a continuation line: Status: install ok installed\n"
            " .\n"
        )
    return "\n".join(stanzas)


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query not installed")
def test_dpkg_count_matches_dpkg_query(tmp_path: Path) -> None:
    admin = tmp_path / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "available").write_text("")
    text = dpkg_status_text()
    (admin / "status").write_text(text)
    result = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W", "-f=${db:Status-Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    )
    truth = sum(1 for line in result.stdout.splitlines() if line == "installed")
    # The recipe: the state word (third) is "installed" (want may be install or hold).
    assert truth == sum(1 for s in STATUSES if s.split()[2] == "installed") == 5
    assert count_dpkg_status(text.encode()) == truth


def test_distroless_status_d_files() -> None:
    assert count_dpkg_status_d(b"Package: libc6\nVersion: 2.36\nArchitecture: amd64\n") == 1
    assert count_dpkg_status_d(b"Package: a\nStatus: install ok installed\n\nPackage: b\n") == 2
    assert count_dpkg_status_d(b"Package: a\nStatus: deinstall ok config-files\n") == 0


def test_apk_records() -> None:
    packages = ["musl", "busybox", "alpine-baselayout", "apk-tools"]
    db = "".join(
        f"C:Q1abc=\nP:{p}\nV:1.0-r0\nA:x86_64\nT:desc P:not a record\n\n" for p in packages
    )
    assert count_apk_installed(db.encode()) == len(packages)


def test_rpm_sqlite_count(tmp_path: Path) -> None:
    db = tmp_path / "rpmdb.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b"h",)] * 12)
    conn.commit()
    conn.close()
    assert count_rpm_sqlite(db) == 12
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not sqlite" * 100)
    assert count_rpm_sqlite(broken) is None


def test_os_release_quoting() -> None:
    fields = parse_os_release(
        b'# comment\nNAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\n'
        b"PRETTY_NAME='Alpine Linux v3.20'\nBAD LINE\n=x\n"
    )
    assert fields == {
        "NAME": "Alpine Linux",
        "ID": "alpine",
        "VERSION_ID": "3.20.3",
        "PRETTY_NAME": "Alpine Linux v3.20",
    }


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_KEY", True),
        ("SECRET_KEY", True),
        ("AWS_ACCESS_KEY_ID", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("MYSQL_ROOT_PASSWD", True),
        ("GITHUB_TOKEN", True),
        ("DBPASSWORD", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("SSH_PRIVATE_KEY", True),
        ("BASIC_AUTH", True),
        ("GPG_PASSPHRASE", True),
        ("KEYBOARD_LAYOUT", False),
        ("MONKEY", False),
        ("AUTHOR", False),
        ("GPG_KEY", False),
        ("PATH", False),
        ("PWD", False),
        ("LANG", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_secret_values_and_scrubbing() -> None:
    gh = "ghp_" + "A1b2C3d4E5" * 4
    aws = "AKIA" + "ABCDEFGHIJKLMNOP"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert secret_value(gh) and secret_value(aws) and secret_value(pem)
    assert secret_value("xoxb-1234567890-abcdef")
    assert not secret_value("hello world")
    redactor = Redactor()
    env, flagged = redactor.env(
        [
            "API_TOKEN=s3cr3t-value-123",
            f"HARMLESS={gh}",
            "KEYBOARD=us",
            "PATH=/usr/bin",
            "EMPTY_PASSWORD=",
        ]
    )
    assert env == {
        "API_TOKEN": REDACTED,
        "HARMLESS": REDACTED,
        "KEYBOARD": "us",
        "PATH": "/usr/bin",
        "EMPTY_PASSWORD": "",
    }
    assert flagged == ["API_TOKEN", "HARMLESS"]
    line = redactor.text(
        "|1 API_TOKEN=s3cr3t-value-123 /bin/sh -c echo s3cr3t-value-123 DB_PASSWORD=x " + aws
    )
    assert "s3cr3t" not in line and aws not in line and "DB_PASSWORD=x" not in line
    assert "API_TOKEN=<redacted>" in line
    assert redactor.scrub({"k": ["s3cr3t-value-123"]}) == {"k": [REDACTED]}


def test_secret_rules_are_data_with_their_licence_and_all_compile() -> None:
    import tomllib
    from importlib import resources

    from bot.image.redact import RULE_FILES, rules

    data = resources.files("bot.image").joinpath("data")
    assert "MIT License" in data.joinpath("gitleaks-LICENSE").read_text()
    ids = set()
    for name in RULE_FILES:
        ids |= {r["id"] for r in tomllib.loads(data.joinpath(name).read_text())["rules"]}
    assert {r.id for r in rules()} == ids  # no rule skipped for a Python regex error
    assert len(ids) >= 40


JWT = (
    "eyJhbGciOiJIUzI1NiJ9aaaa.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgres://app:S3cretPassw0rd@db/app", "postgres://app:<redacted>@db/app"),
        ("https://x-access-token:abc123def@github.com/o/r.git", "https://x-access-token:<redacted>@github.com/o/r.git"),
        ("redis://:hunter22@cache:6379/0", "redis://:<redacted>@cache:6379/0"),
        ("postgres://app:${DB_PASSWORD}@db/app", "postgres://app:${DB_PASSWORD}@db/app"),
        ("http://example.com/a:b@c", "http://example.com/a:b@c"),  # not userinfo
        ("key AKIAIOSFODNN7EXAMPLE here", "key AKIAIOSFODNN7EXAMPLE here"),  # AWS's doc key
        ("key AKIAZ3MEHJDR4QPVXK2T here", "key <redacted> here"),
        ("Authorization: Bearer " + JWT + " ok", "Authorization: Bearer <redacted> ok"),
        ("https://discord.com/api/webhooks/123456789012345678/" + "a" * 68, "https://discord.com/api/webhooks/123456789012345678/<redacted>"),
        ("npm_" + "a1" * 18 + " done", "<redacted> done"),
    ],
)  # fmt: skip
def test_only_the_secret_span_is_replaced(text: str, shown: str) -> None:
    from bot.image.redact import redact_secrets

    assert redact_secrets(text)[0] == shown
