"""`python -m tfsacnn.evaluate`: recompute a run's metrics from its SavedModel (`evaluation.evaluate`)."""
import sys

from .evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
