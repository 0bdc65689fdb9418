"""Benchmarks of the real stack (``router-mesh bench ...``); not tests.

Installed as ``routermesh_bench``. Each command writes JSON results (and PNG
plots) to a folder; ``router-mesh bench report`` turns them into
docs/benchmarks.md. The older engine scripts (engines.py, report_engines.py,
convert_gguf.py) are run as scripts, see docs/engines.md.
"""
