"""The backend-specific claim of tests/test_claims.py under JAX: BatchNorm's training step
(written with keras.ops here, a fused TensorFlow kernel under TensorFlow) against
`torch.nn.BatchNorm2d`. The other claims' code is backend-independent (numpy
bookkeeping, keras.ops) and runs in tests/test_claims.py."""
from tests.test_claims import (  # noqa: F401  (collected here, runs under JAX)
    test_batchnorm_training_step_matches_torch_batchnorm2d,
)
