"""`python -m tfsacnn.fit`: train one config (`cli.fit`)."""
import sys

from .cli.fit import main

if __name__ == "__main__":
    sys.exit(main())
