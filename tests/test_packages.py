"""Package lists for comparisons: the database parsers, where the files are, the diff."""

from __future__ import annotations

from bot.image.compare import MAX_LISTED, package_diff
from bot.image.layers import Entry, LayerScan
from bot.image.packages import Package, PackageList, locate, parse_apk, parse_dpkg

DPKG = b"""Package: libc6
Status: install ok installed
Priority: optional
Installed-Size: 13001
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u7
Description: GNU C Library
 a continuation line: Package: not-a-package

Package: tzdata
Status: deinstall ok config-files
Version: 2024a-0+deb12u1

Package: base-files
Status: install ok installed
Essential: yes
Installed-Size: 341
Architecture: amd64
Version: 12.4+deb12u5
"""

APK = b"""C:Q1abc=
P:musl
V:1.2.5-r0
A:x86_64
I:407552

C:Q1def=
P:busybox
V:1.36.1-r29
I:946176
"""


def test_dpkg_status_lists_installed_packages_with_sizes_in_bytes() -> None:
    packages = {p.name: p for p in parse_dpkg(DPKG)}
    assert set(packages) == {"libc6:amd64", "base-files"}  # config-files is not installed
    assert packages["libc6:amd64"] == Package("libc6:amd64", "2.36-9+deb12u7", 13001 * 1024)
    assert packages["base-files"].size == 341 * 1024


def test_distroless_status_d_needs_no_status_field() -> None:
    text = b"Package: netbase\nVersion: 6.4\nArchitecture: all\n"
    assert parse_dpkg(text) == []
    assert parse_dpkg(text, status_required=False) == [Package("netbase", "6.4", None)]


def test_apk_installed_records() -> None:
    assert parse_apk(APK) == [
        Package("musl", "1.2.5-r0", 407552),
        Package("busybox", "1.36.1-r29", 946176),
    ]


def scan(
    entries: dict[str, Entry], whiteouts: list[str] | None = None, opaque: list[str] | None = None
) -> LayerScan:
    return LayerScan("sha256:x", entries, whiteouts or [], opaque or [])


def test_locate_takes_the_topmost_copy_and_honours_whiteouts() -> None:
    f = Entry("f", 10)
    scans = [
        scan({"var/lib/dpkg/status": f, "lib/apk/db/installed": f}),
        scan({"etc/x": f}),
        scan({"var/lib/dpkg/status": f}),
    ]
    assert locate(scans) == ("dpkg", {"var/lib/dpkg/status": 2})
    deleted = [*scans, scan({}, whiteouts=["var/lib/dpkg"])]
    assert locate(deleted) == ("apk", {"lib/apk/db/installed": 0})
    hidden = [*scans, scan({}, opaque=["var/lib/dpkg"]), scan({}, whiteouts=["lib"])]
    assert locate(hidden) is None
    status_d = [scan({"var/lib/dpkg/status.d/netbase": f, "var/lib/dpkg/status.d/x.md5sums": f})]
    assert locate(status_d) == ("dpkg", {"var/lib/dpkg/status.d/netbase": 0})


def test_package_diff_sorts_by_size_and_is_bounded() -> None:
    a = PackageList(
        "dpkg",
        {f"p{i}": Package(f"p{i}", "1", i * 1024) for i in range(MAX_LISTED + 1000)}
        | {"same": Package("same", "1", 5), "up": Package("up", "1", 7)},
    )
    b = PackageList(
        "dpkg",
        {
            "same": Package("same", "1", 5),
            "up": Package("up", "2", 9),
            "new": Package("new", "x" * 500, None),
        },
    )
    diff = package_diff(a, b)
    assert len(diff["only_a"]) == MAX_LISTED
    assert diff["only_a"][0]["name"] == f"p{MAX_LISTED + 999}"  # largest first
    assert diff["changed"] == [{"name": "up", "a": "1", "b": "2", "size_a": 7, "size_b": 9}]
    (new,) = diff["only_b"]
    assert new["size"] is None and len(new["version"]) == 200
