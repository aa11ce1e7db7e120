"""The package version (one place: ``sslfast.__version__`` and the kernel verdict cache read it)."""
__version__ = "0.1.0"
