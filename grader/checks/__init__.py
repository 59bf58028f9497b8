"""The check catalogue: a pytest suite run in the trusted harness (see grader.harness.plugin)."""
