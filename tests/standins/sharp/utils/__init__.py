"""Stand-in for ``sharp.utils``."""
