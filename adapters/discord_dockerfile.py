"""Discord: a ``Dockerfile`` attached to a message addressed to the bot, and the
``/dockerfile-explain`` command with its modal.

The attachment becomes a fenced Dockerfile appended to the message text, so the engine's
``handle`` explains it like a Dockerfile pasted in the message (size, binary and parse
errors are its one-line errors). Files named ``Dockerfile``, ``Containerfile``,
``Dockerfile.<suffix>`` or ``<name>.Dockerfile`` count; the first one is read.

``/dockerfile-explain`` answers with a modal (interaction callback type 9) holding one
paragraph text input of up to 4,000 characters (Discord's limit). Its submission (a
``MODAL_SUBMIT`` interaction, type 5) is deferred publicly, explained by
``Engine.explain_dockerfile`` and sent as follow-ups; blank or unparsable input gets a
private (flag 64) one-line error instead. A modal waits for its submission at most
``MODAL_TIMEOUT`` seconds (the interaction token's lifetime) and not across a restart.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord

from bot.dockerfile_explain import MAX_DOCKERFILE_BYTES
from bot.engine import Asker, error_reply

if TYPE_CHECKING:
    from adapters.discord import DockwiseClient

client_log = logging.getLogger("adapters.discord")

COMMAND = "dockerfile-explain"
MODAL_TITLE = "Explain a Dockerfile"
#: Discord's maximum length of a text input's value (characters).
MAX_INPUT = 4000
#: Seconds a modal waits for its submission (Discord's interaction tokens last 15 minutes).
MODAL_TIMEOUT = 15 * 60
EMPTY_ERROR = "That was empty: paste a Dockerfile (at least a FROM line) into the box."

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


class DockerfileModal(discord.ui.Modal, title=MODAL_TITLE):
    """The ``/dockerfile-explain`` modal: one paragraph input; submitting explains it."""

    dockerfile: discord.ui.TextInput[DockerfileModal] = discord.ui.TextInput(
        label="Dockerfile",
        style=discord.TextStyle.paragraph,
        placeholder='FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]',
        max_length=MAX_INPUT,
        required=True,
    )

    def __init__(self, client: DockwiseClient) -> None:
        super().__init__(timeout=MODAL_TIMEOUT)
        self.client = client

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await explain_submitted(self.client, interaction, self.dockerfile.value)


async def explain_submitted(
    client: DockwiseClient, interaction: discord.Interaction, text: str
) -> None:
    """Explain a submitted Dockerfile: blank input is refused privately at once; else defer
    (Discord's 3-second window) and send the explanation (an engine error: privately)."""
    if not text.strip():
        await client._send_private(interaction, error_reply(EMPTY_ERROR))
        return
    asker = Asker(
        "discord",
        str(interaction.user.id),
        str(interaction.channel_id) if interaction.channel_id is not None else None,
        str(interaction.guild_id) if interaction.guild_id is not None else None,
    )
    await client.answer_interaction(
        interaction, lambda: client.engine.explain_dockerfile(text, asker=asker)
    )


def add_dockerfile_command(client: DockwiseClient) -> None:
    """Add ``/dockerfile-explain`` to ``client.tree`` (synced with the other commands)."""

    @client.tree.command(name=COMMAND, description="Paste a Dockerfile and get it explained")
    async def dockerfile_explain(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.send_modal(DockerfileModal(client))
        except discord.HTTPException as exc:
            client_log.warning("could not open the Dockerfile modal (HTTP %s)", exc.status)

    del dockerfile_explain  # registered on the tree by the decorator


__all__ = [
    "COMMAND",
    "DOCKERFILE_NAME",
    "DockerfileModal",
    "add_dockerfile_command",
    "explain_submitted",
    "with_attached_dockerfile",
]
