"""``pixelift serve``: a warm local HTTP + JSON service (optional extra ``serve``).

- :mod:`.state`: the service folder (token file 0600, ``service.json`` with pid and port, the
  single-instance lock, the journal of output folders) and discovery for clients.
- :mod:`.jobs`: typed job specs parsed from JSON, the job queue and its worker threads, the
  LRU cache of warm :class:`~pixelift.runtime.enhancer.Enhancer` objects.
- :mod:`.app`: the HTTP layer (aiohttp): loopback Host check, token, size limit, JSON errors,
  the endpoints, the event stream, idle shutdown.
- :mod:`.client`: a stdlib-only client (``pixelift enhance --server``, the benches, the tests).

Only :mod:`.app` needs the extra; the rest is importable in any install. Torch-free.
"""
