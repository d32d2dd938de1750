"""newsletter: Markdown issues to responsive HTML email, a subscriber store, and sends that never repeat.

`Newsletter` is the front door: `Newsletter.from_config("config.toml")` offers rendering,
subscribers, sends, the schedule and the web side. Every expected failure is a
`NewsletterError` (see `newsletter.errors`).
"""

from .app import Newsletter
from .errors import NewsletterError

__version__ = "0.1.0"
__all__ = ["Newsletter", "NewsletterError", "__version__"]
