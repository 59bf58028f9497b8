"""Calibrate the overfit checks' bounds: ``grader/authoring/overfit_calibration.py`` does it."""

import sys

from grader.authoring.overfit_calibration import main

if __name__ == "__main__":
    sys.exit(main())
