"""Slack: ``/dockerfile-explain`` opens a modal; its submission is explained in the channel.

- The command is acknowledged with an empty body and answered with ``views.open``: a modal
  (``callback_id`` ``dockwise_dockerfile``) holding one multi-line ``plain_text_input``
  (``max_length`` 3,000, Slack's limit for that element). The command's channel travels
  in ``private_metadata`` as JSON ``{"channel": "C…", "response_url": "https://…"}``.
- The ``view_submission`` is acknowledged at once: blank input keeps the modal open with
  ``response_action: "errors"`` under the input; anything else closes it. The engine's
  explanation (``Engine.explain_dockerfile``) is then posted to the channel
  (``chat.postMessage``); an error (not a Dockerfile, unparsable, …) goes to the submitter
  alone (``chat.postEphemeral``), one line. Where the bot can't post (a channel it is not
  in, someone else's DM: ``not_in_channel`` / ``channel_not_found``), the command's
  ``response_url`` (also kept in ``private_metadata``; 30 minutes, 5 uses) carries the
  messages instead, ``in_channel`` or ``ephemeral`` alike.
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
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

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


#: Slack's answers to a post where the bot may not write; the response_url still works.
NOT_THERE = {"not_in_channel", "channel_not_found"}


def dockerfile_modal(channel: str, response_url: str = "") -> dict[str, Any]:
    """The modal view for ``views.open``; ``channel`` (where the answer goes) and the
    command's ``response_url`` are kept in ``private_metadata`` (JSON)."""
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Explain a Dockerfile"},
        "submit": {"type": "plain_text", "text": "Explain"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel": channel, "response_url": response_url}),
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


def _metadata(view: dict[str, Any]) -> tuple[str, str]:
    """(channel, response_url) from the view's ``private_metadata`` ("" when missing)."""
    try:
        meta = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return "", ""
    if not isinstance(meta, dict):
        return "", ""
    return str(meta.get("channel") or ""), str(meta.get("response_url") or "")


async def _send(
    client: AsyncWebClient,
    channel: str,
    user: str,
    response_url: str,
    messages: list[dict[str, Any]],
    *,
    private: bool,
) -> None:
    """Post ``messages`` in ``channel`` (to ``user`` alone if ``private``); where the bot
    may not post, through ``response_url`` instead. Failures are logged, never raised."""
    for index, message in enumerate(messages):
        body = {"text": message["text"], "blocks": message["blocks"]}
        try:
            if private:
                await client.chat_postEphemeral(channel=channel, user=user, **body)
            else:
                await client.chat_postMessage(
                    channel=channel, unfurl_links=False, unfurl_media=False, **body
                )
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "")
            if code in NOT_THERE and response_url:
                await _send_by_response_url(response_url, messages[index:], private=private)
            else:
                log.error("slack: posting the Dockerfile explanation failed (%s)", code)
            return
        except Exception as exc:
            log.error("slack: posting the Dockerfile explanation failed: %s", type(exc).__name__)
            return


async def _send_by_response_url(
    response_url: str, messages: list[dict[str, Any]], *, private: bool
) -> None:
    webhook = AsyncWebhookClient(url=response_url)
    kind = "ephemeral" if private else "in_channel"
    for message in messages[:5]:  # a response_url takes five messages
        try:
            response = await webhook.send_dict(
                {"response_type": kind, "replace_original": False, **message}
            )
        except Exception as exc:
            log.error("slack: response_url post failed: %s", type(exc).__name__)
            return
        if response.status_code != 200:
            log.error("slack: response_url refused the reply (%s)", response.status_code)
            return


def register(adapter: SlackAdapter) -> None:
    """Add the command and the modal's submission listener to ``adapter.app``."""

    async def on_command(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        channel = str(command.get("channel_id") or "")
        view = dockerfile_modal(channel, str(command.get("response_url") or ""))
        try:
            await client.views_open(trigger_id=str(command.get("trigger_id") or ""), view=view)
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
        channel, response_url = _metadata(view)
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
        asker = Asker("slack", user, channel or None, str(team) if team else None)
        reply = await adapter._guarded(adapter.engine.explain_dockerfile(text, asker=asker))
        messages = render_messages(reply)
        if not channel:
            log.error("slack: a Dockerfile modal came back without its channel")
            return
        private = reply.kind is ReplyKind.ERROR
        await _send(client, channel, user, response_url, messages, private=private)

    adapter.app.command(COMMAND)(on_command)
    adapter.app.view_submission(CALLBACK_ID)(on_submission)
