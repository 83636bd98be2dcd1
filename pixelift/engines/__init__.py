"""Engines that spread a batch of files over more than one process or machine.

Each is optional and imported only when asked for (``--engine ray`` imports :mod:`.ray_engine`, which imports
Ray); the runtime never imports this package.
"""
