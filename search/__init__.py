"""The in-RAM attribute-keyed index, the query engine and the command line."""
