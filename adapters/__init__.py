"""Chat platform adapters: one module per platform, registered by one line below.

Each module defines ``ADAPTER``, a ``bot.chat.ChatAdapter`` subclass. Adding a platform
(say Mattermost) is a new module ``adapters/mattermost.py`` plus its line here.
"""

PLATFORMS: list[str] = [
    "adapters.slack",
    "adapters.discord",
]
