"""The results table and the seed-independent summary from the metrics JSON: the report stage."""
