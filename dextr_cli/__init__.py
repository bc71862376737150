"""The ``dextr`` command-line app (thin Typer commands over :mod:`dextr_lib`)."""
