"""Independent neurons trained in chunks, one after another: memory bounded by the chunk."""
import numpy as np

from .. import models
from .strategy import set_seed


class ChunkedTraining:
    """Trains `trainer.neurons` in chunks of `size` with one `Trainer` per chunk.

    The whole site's weights are small (activations are what chunks bound), so they are
    built once and every neuron starts from the same initial weights as in one pass. Each
    chunk checkpoints to `checkpoints/chunkNNNNN.npz` and logs under its own tag.
    """

    def __init__(self, trainer, size):
        self.trainer, self.size = trainer, size

    def fit(self, resume=False, callbacks=()):
        from .trainer import Trainer

        t = self.trainer
        set_seed(t.cfg.train.seed)
        with t.strategy.scope():
            full = t.build_model(len(t.neurons))
        history, best_epoch = [], []
        for start in range(0, len(t.neurons), self.size):
            part = t.neurons[start:start + self.size]
            sub = Trainer(t.cfg, t.run_dir, strategy=t.strategy, log=t.log, neurons=part,
                          checkpoint_name=f"chunk{start:05d}.npz", quiet=t.quiet)
            sub.tag = f"neurons {part[0]}..{part[-1]}"
            model, hist, best = sub.fit_neurons(resume, callbacks, init=(full, start))
            for j in range(len(part)):
                models.set_neuron_weights(full, start + j, models.neuron_weights(model, j))
            history.append(hist)
            best_epoch.extend(best.tolist())
        return full, history, np.asarray(best_epoch)
