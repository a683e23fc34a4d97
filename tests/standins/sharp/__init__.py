"""A test stand-in for Apple's ml-sharp package (import name ``sharp``).

It follows ml-sharp's documented interface (module and function names, tensor shapes and dtypes,
the PLY layout) at a tiny size so the project's SHARP backends can be tested without the real
package or its 2.8 GB checkpoint. It is not SHARP: its "network" is a few 1×1 convolutions.

Test hooks (environment variables, read at call time):

* ``SHARP_STANDIN_MAX_BATCH=k``: a forward pass with more than ``k`` images raises torch's
  out-of-memory error, as CUDA does;
* ``SHARP_STANDIN_HOLD_FIRST_PASS=DIR:N``: the first forward pass waits until ``DIR`` holds ``N``
  (non-hidden) files, as a slow first pass on a real device lets the caller's queue fill up;
* ``SHARP_STANDIN_FATAL=1``: every forward pass raises torch's accelerator error
  (an unrecoverable device fault);
* an all-black input image makes the forward pass raise ``RuntimeError`` (a data-dependent
  failure of one image).
"""

STANDIN = True
__version__ = "0.1"
