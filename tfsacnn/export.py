"""SavedModel export and atomic saving of run artefacts.

`export_saved_model(model, path)` writes a TF SavedModel with endpoints
- `serve`: images `(B, S, S, 1)` float32, as stored in the dataset -> responses `(B, n)`;
- `attention` (SA models only): images -> attention `(B, n, heads, P, P)`.
Both load with plain TensorFlow (`tf.saved_model.load`), without tfsacnn.
"""
import os
import pathlib

import keras
import tensorflow as tf

from . import models
from .files import atomic_dir


def export_saved_model(model, path):
    size = model.input_shape[1]
    spec = [tf.TensorSpec((None, size, size, 1), tf.float32, name="images")]

    def write(target):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=spec)
        if models.has_attention(model):
            archive.add_endpoint("attention", lambda x: models.attention_maps(model, x),
                                 input_signature=spec)
        archive.write_out(str(target), verbose=False)

    atomic_dir(path, write)


def save_keras(model, path):
    """`model.save(path)` through a temporary file."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def main(argv=None):
    """`python -m tfsacnn.export --run RUN`: write RUN/saved_model from RUN/model.keras."""
    import argparse

    from .errors import OneLineParser, TfsacnnError, run_cli

    p = OneLineParser(prog="python -m tfsacnn.export", description=main.__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory with model.keras")

    def run(args):
        src = pathlib.Path(args.run) / "model.keras"
        if not src.is_file():
            raise TfsacnnError(f"{src}: not found")
        model = keras.saving.load_model(src, compile=False)
        export_saved_model(model, pathlib.Path(args.run) / "saved_model")
        print(f"wrote {pathlib.Path(args.run) / 'saved_model'}")

    args = p.parse_args(argv)
    return run_cli(run, args, path=args.run)


if __name__ == "__main__":
    import sys

    sys.exit(main())
