"""cfbox-watch: move studio assets between local folders and Box.com."""

__version__ = "0.1.0"
