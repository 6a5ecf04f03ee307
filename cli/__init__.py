"""The ``fashion-search`` command line: the top layer, wiring every package's functions to flags."""
