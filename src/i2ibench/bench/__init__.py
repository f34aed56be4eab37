"""The benchmark: runs of method x seed on a dataset, and the result tables built from their records."""
