"""Slack: ``/dockerfile-explain`` opens a modal; its submission is explained in the channel.

- The command is acknowledged with an empty body and answered with ``views.open``: a modal
  (``callback_id`` ``dockwise_dockerfile``) holding one multi-line ``plain_text_input``
  (``max_length`` 3,000, Slack's limit for that element). The command's channel travels
  in ``private_metadata`` as JSON ``{"channel": "C…"}``.
- The ``view_submission`` is acknowledged at once: blank input keeps the modal open with
  ``response_action: "errors"`` under the input; anything else closes it. The engine's
  explanation (``Engine.explain_dockerfile``) is then posted to the channel
  (``chat.postMessage``); an error (not a Dockerfile, unparsable, …) goes to the submitter
  alone (``chat.postEphemeral``), one line.
- Slack's client stops input at 3,000 characters, so a longer Dockerfile arrives cut: the
  part that fits is explained, and the hint under the box says so (longer Dockerfiles:
  mention @dockwise with a fenced block, up to 64 KB).

Spec: Slack's "Using modals" (views.open, view_submission, response_action) and the Block
Kit reference for ``input`` / ``plain_text_input``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_blocks import render_messages
from bot.engine import Asker
from bot.reply import ReplyKind

if TYPE_CHECKING:
    from adapters.slack import SlackAdapter

__all__ = [
    "BLOCK_ID",
    "CALLBACK_ID",
    "COMMAND",
    "EMPTY_ERROR",
    "INPUT_ID",
    "MAX_INPUT",
    "dockerfile_modal",
    "register",
]

log = logging.getLogger(__name__)

COMMAND = "/dockerfile-explain"
CALLBACK_ID = "dockwise_dockerfile"
BLOCK_ID = "dockwise_dockerfile_block"
INPUT_ID = "dockwise_dockerfile_text"
#: Slack's maximum ``max_length`` for a ``plain_text_input`` (characters).
MAX_INPUT = 3000
EMPTY_ERROR = "Paste a Dockerfile here (at least a FROM line)."
PLACEHOLDER = 'FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]'
HINT = (
    f"Up to {MAX_INPUT:,} characters (Slack's limit for this box); a longer Dockerfile is "
    "explained as far as it fits. For the whole file (up to 64 KB), mention @dockwise with "
    "it in a ``` block."
)


def dockerfile_modal(channel: str) -> dict[str, Any]:
    """The modal view for ``views.open``; ``channel`` (where the answer goes) is kept in
    ``private_metadata`` as ``{"channel": channel}``."""
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Explain a Dockerfile"},
        "submit": {"type": "plain_text", "text": "Explain"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel": channel}),
        "blocks": [
            {
                "type": "input",
                "block_id": BLOCK_ID,
                "label": {"type": "plain_text", "text": "Dockerfile"},
                "hint": {"type": "plain_text", "text": HINT},
                "element": {
                    "type": "plain_text_input",
                    "action_id": INPUT_ID,
                    "multiline": True,
                    "max_length": MAX_INPUT,
                    "placeholder": {
                        "type": "plain_text",
                        "text": PLACEHOLDER,
                    },
                },
            }
        ],
    }


def _submitted_text(view: dict[str, Any]) -> str:
    values = ((view.get("state") or {}).get("values") or {}).get(BLOCK_ID) or {}
    value = (values.get(INPUT_ID) or {}).get("value")
    return str(value or "")


def _channel(view: dict[str, Any]) -> str:
    try:
        meta = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return ""
    return str(meta.get("channel") or "") if isinstance(meta, dict) else ""


def register(adapter: SlackAdapter) -> None:
    """Add the command and the modal's submission listener to ``adapter.app``."""

    async def on_command(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        channel = str(command.get("channel_id") or "")
        try:
            await client.views_open(
                trigger_id=str(command.get("trigger_id") or ""), view=dockerfile_modal(channel)
            )
        except Exception as exc:
            log.error("slack: views.open failed: %s", type(exc).__name__)

    async def on_submission(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        text = _submitted_text(view)[:MAX_INPUT]
        if not text.strip():
            await ack(response_action="errors", errors={BLOCK_ID: EMPTY_ERROR})
            return
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        channel = _channel(view)
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
        asker = Asker("slack", user, channel or None, str(team) if team else None)
        reply = await adapter._guarded(adapter.engine.explain_dockerfile(text, asker=asker))
        messages = render_messages(reply)
        if not channel:
            log.error("slack: a Dockerfile modal came back without its channel")
            return
        if reply.kind is ReplyKind.ERROR:
            await adapter._post_ephemeral(client, channel, user, None, messages)
        else:
            await adapter._post(client, channel, None, messages)

    adapter.app.command(COMMAND)(on_command)
    adapter.app.view_submission(CALLBACK_ID)(on_submission)
