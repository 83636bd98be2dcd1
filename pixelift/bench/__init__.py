"""``pixelift bench`` and ``pixelift compare`` (the ``bench`` extra: ``pip install 'pixelift[bench]'``).

Nothing is imported here: ``pixelift.cli`` registers the click commands from
:mod:`pixelift.bench.cli`, which imports the runner, report and comparison only when a
command runs, and the worker (``python -m pixelift.bench.worker``) imports only pixelift
and the runtime under test.
"""
