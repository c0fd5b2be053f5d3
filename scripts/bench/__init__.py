"""The stages of ``scripts/benchmark.py``, one module each (see that script's docstring for the
order and for what every DiT path means). Independent of each other but for :mod:`.timing`,
:mod:`.context` and :mod:`.results`; none is imported by the library."""
