"""`python -m tfsacnn.bench`."""
import sys

from . import main

sys.exit(main())
