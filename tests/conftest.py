"""Shared pytest set-up. Fixture modules live in tests/fixtures/, one job each."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.registry",
    "tests.fixtures.redis",
]
