"""Runs `tfsacnn.fit` in its own process for the distribution tests.

usage: python tests/dist_worker.py N_LOGICAL_CPUS FIT_ARGS...
(TF_CONFIG in the environment makes it a MultiWorkerMirroredStrategy worker.)
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

n = int(sys.argv[1])
if n > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)

from tfsacnn.cli import fit  # noqa: E402

sys.exit(fit.main(sys.argv[2:]))
