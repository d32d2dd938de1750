"""newsletter: Markdown issues to responsive HTML email, a subscriber store, and sends that never repeat."""

__version__ = "0.1.0"
