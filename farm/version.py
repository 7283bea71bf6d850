"""The farm's version: the package's, the page's footer's and every run manifest's."""

__version__ = "0.1.0"
