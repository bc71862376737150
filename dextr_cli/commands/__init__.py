"""One module per ``dextr`` command."""
