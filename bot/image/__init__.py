"""Image inspection: references, sources (registry, Docker Engine), layer analysis, facts."""
