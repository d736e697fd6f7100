"""Discord: a ``Dockerfile`` attached to a message addressed to the bot.

The attachment becomes a fenced Dockerfile appended to the message text, so the engine's
``handle`` explains it like a Dockerfile pasted in the message (size, binary and parse
errors are its one-line errors). Files named ``Dockerfile``, ``Containerfile``,
``Dockerfile.<suffix>`` or ``<name>.Dockerfile`` count; the first one is read.
"""

from __future__ import annotations

import re

import discord

from bot.dockerfile_explain import MAX_DOCKERFILE_BYTES

DOCKERFILE_NAME = re.compile(
    r"^(?:Dockerfile|Containerfile)(?:\.[\w.-]+)?$|\.(?:Dockerfile|Containerfile)$", re.I
)
# Up to this, the file is downloaded and the engine's refusal names its real size; above
# it (not a Dockerfile anyway), it is refused unread as "over 64 KB".
DOWNLOAD_LIMIT = 10 * 1024 * 1024


async def with_attached_dockerfile(message: discord.Message, text: str) -> str:
    """``text``, plus the first attached Dockerfile as a ```dockerfile block when there is
    one. A file too big to read becomes a one-line note the engine answers with its
    size limit; a download failure leaves ``text`` as it was."""
    for attachment in message.attachments:
        if not DOCKERFILE_NAME.search(attachment.filename):
            continue
        if attachment.size > DOWNLOAD_LIMIT:
            body = "#" * (MAX_DOCKERFILE_BYTES + 1)  # refused by the engine's size check
        else:
            try:
                data = await attachment.read()
            except (discord.HTTPException, discord.NotFound):
                return text
            body = data.decode("utf-8", "surrogateescape")
        return f"{text}\n```dockerfile\n{body}\n```"
    return text


__all__ = ["DOCKERFILE_NAME", "with_attached_dockerfile"]
