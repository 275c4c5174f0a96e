"""The experiments behind README's figures and tables: the suites (runs.py), their figures (plot.py), the
speed benchmark (bench.py), the statistics (stats.py), reading result trees (results.py), and the
record of every configuration tried (README.md)."""
