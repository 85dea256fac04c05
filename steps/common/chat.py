"""Prompts as chat messages: one way to add the system turn, for every step."""
from __future__ import annotations


def user_messages(text: str, system: str | None = None) -> list[dict[str, str]]:
    """[system (when given), user]: what a chat template renders with the generation prompt."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": str(text)}]


def prompt(text: str, system: str | None, chat: bool, plain_system: bool = False):
    """Chat messages, or the plain text for a model without a chat template.

    In plain mode the system prompt is left out, unless `plain_system` puts it first (the
    trainers and q* do: the text is all the model sees)."""
    if chat:
        return user_messages(text, system)
    return f"{system}\n\n{text}" if system and plain_system else str(text)


def assistant_message(text: str, chat: bool):
    return [{"role": "assistant", "content": str(text)}] if chat else str(text)


def fill(template: str, **fields: object) -> str:
    """`{name}` placeholders replaced one by one: not str.format, so LaTeX braces stay as they are."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", str(value))
    return template
