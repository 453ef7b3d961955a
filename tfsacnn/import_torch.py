"""`python -m tfsacnn.import_torch`: import the paper's PyTorch checkpoints as a run (`cli.import_torch`)."""
import sys

from .cli.import_torch import main

if __name__ == "__main__":
    sys.exit(main())
