"""`python -m tfsacnn.analyze`: look inside a trained model (`evaluation.analyze`)."""
import sys

from .evaluation.analyze import main

if __name__ == "__main__":
    sys.exit(main())
