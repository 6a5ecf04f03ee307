"""Product dumps, appearance codes, colour histograms, describe() and the bulk indexer."""
