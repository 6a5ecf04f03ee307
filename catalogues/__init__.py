"""Product dumps made from data: the synthetic catalogue, converters of real datasets, composed scenes."""
