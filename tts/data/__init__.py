"""Package data: default hyper-parameter files."""
