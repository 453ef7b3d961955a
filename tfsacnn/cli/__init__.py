"""Command-line entry points: `tfsacnn <command>` and `python -m tfsacnn.<command>`."""
