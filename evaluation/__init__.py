"""The end-to-end retrieval evaluation and its report."""
