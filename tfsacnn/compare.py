"""`python -m tfsacnn.compare`: compare trained runs in a table like the paper's Table 1 (`evaluation.compare`)."""
import sys

from .evaluation.compare import main

if __name__ == "__main__":
    sys.exit(main())
