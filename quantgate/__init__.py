"""quantgate: is a quantized MoE checkpoint as good as BF16, and how fast and small is it?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quantgate")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
