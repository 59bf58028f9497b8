"""TRUSTED side: naming the mistake behind a failing check.

``catalogue`` reads the known misconceptions (``catalogue.toml``); ``evidence``
compares what a student's code computed with each misconception's fingerprint,
value by value, while the checks run; ``diagnose`` weighs that evidence over the
whole submission and writes the diagnoses into the results. Fingerprints are
built with the expected values (``grader.authoring.fingerprints``).
"""
