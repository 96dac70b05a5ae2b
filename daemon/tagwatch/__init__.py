"""tagwatch: a daemon that writes CLIP zero-shot keywords into the photos in watched folders."""

__version__ = "0.1.0"
