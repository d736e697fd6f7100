"""Every cache and "run once, share the result" helper of dockwise, in one package.

- ``bot.cache.base``: the interfaces, ``ManifestCache`` and ``LayerFactsCache``.
- ``bot.cache.memory``: ``MemoryManifestCache``, process-local (tests, the CLI).
- ``bot.cache.sqlite``: the local persistent caches in one SQLite file (layer facts,
  manifests, the index of images seen), capped by ``DOCKWISE_CACHE_MAX_BYTES`` with LRU
  eviction.
- ``bot.cache.redis``: the same caches shared in Redis (``DOCKWISE_REDIS_URL``), every key
  written with a TTL, falling back to the local ones while Redis is down; ``SingleFlight``
  for work shared across replicas.
- ``bot.cache.share``: ``Shared[K, V]``, one piece of work per key in a process, every
  caller awaiting the same result.

Import the modules themselves (``from bot.cache.sqlite import ...``): this package
imports nothing, so using one store does not load the other's client library.
"""
