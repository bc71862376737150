"""A stand-in for the ``dextr`` 0.1.2 package with the same module and class names, so tests
can write pickles shaped like that package's model files (written for these tests; only the
names and attribute layout follow the original)."""
