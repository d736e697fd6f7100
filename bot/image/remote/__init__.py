"""Talking to OCI / Docker registries (distribution API v2), in layers after
go-containerregistry's ``pkg/v1/remote`` and ``remote/transport``:

* ``errors``: every failure turned into dockwise's one-line errors in one place: aiohttp
  exceptions, HTTP statuses and registry error codes, retries given up.
* ``transport``: one aiohttp session; where a registry is (https, or plain http as the
  insecure-registries policy says), the SSRF guard on every hop, redirects followed by
  hand, retries of 429 / 5xx / broken connections honouring ``Retry-After``.
* ``authn``: answering a registry's ``WWW-Authenticate`` challenge: Basic, or a Bearer token
  from the realm it names, with the credentials from Docker's config (and its helpers).
* ``client``: the API: manifests and indexes, small blobs (configs) and streamed layers,
  with size caps, digest checks and the manifest cache.

``bot.image.registry`` builds the ``ImageSource`` on top (platform choice, layer list).
"""
