"""opsgate: a self-hosted LLMOps gateway speaking the OpenAI API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opsgate")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
