# Image B: A slimmed (packages purged, apt lists removed) with the marker upgraded (v2).
ARG BASE=dockwise-test/cmp-a:1
FROM ${BASE}
ARG PURGE="e2fsprogs logsave libext2fs2 libss2 tzdata util-linux-extra"
ARG MARKER_VERSION=2.0
RUN dpkg --purge --force-depends,remove-essential $PURGE >/dev/null \
 && mkdir -p /tmp/marker/DEBIAN \
 && printf 'Package: dockwise-marker\nVersion: %s\nArchitecture: all\nMaintainer: dockwise tests <tests@example.invalid>\nInstalled-Size: 8\nDescription: comparison marker\n' "$MARKER_VERSION" > /tmp/marker/DEBIAN/control \
 && dpkg-deb --build /tmp/marker /tmp/marker.deb >/dev/null \
 && dpkg -i /tmp/marker.deb >/dev/null \
 && rm -rf /tmp/marker /tmp/marker.deb /var/lib/apt/lists/*
