"""Images in, tensors out: loading, preprocessing, datasets and episode sampling.

Nothing is re-exported here, so that importing a torch-free module of this package
(``data.folders``, used by the CLI before it knows whether a model needs torch) does not
import torch through this file.
"""
