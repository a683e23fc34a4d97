"""sharp-dataset: photos in, a published dataset of 3D Gaussian splats out.

Nothing runs at import time: no environment reads, no logging setup.
"""

__version__ = "0.1.0"
