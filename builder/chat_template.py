"""Reduce a model's Jinja chat template to plain strings a phone can concatenate (DESIGN §11).

Neither Kotlin nor Swift has Jinja. Most chat templates are "preamble, then per message a role prefix,
the content and a role suffix, then a generation prompt". This module finds those strings by rendering
probe conversations with the model's own template, then proves the reduction by re-rendering sample
conversations both ways; a template that does anything else (reorders, trims or rewrites content,
depends on position beyond the first message) is refused with a message that names what differed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from builder.errors import UserInputError

# Probe contents: unlikely in any template, distinct per message, so the text between them is template.
_PROBE = "\u2063{}\u2063probe{}\u2063"

# Conversations the reduction is checked against; contents carry whitespace and markup that a
# template which trims or escapes would change.
SAMPLE_CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("user", "What is the capital of France?"),),
    (("system", "You are terse."), ("user", "Name a colour.")),
    (("user", "Hi!"), ("assistant", "Hello. How can I help?"), ("user", "  Tell me a joke\nin two lines.  ")),
    (
        ("system", "Answer in French."),
        ("user", 'Say "hello" and {{ braces }}'),
        ("assistant", "Bonjour « monde »"),
        ("user", "Merci 🙂"),
    ),
)


@dataclass(frozen=True)
class ChatFormat:
    """preamble (unless the conversation opens with a system message) + per message prefix, content and
    suffix + generation prompt. A system message may only come first and uses `first_system_prefix`,
    which carries any begin-of-text marker; `preamble` carries it plus the template's default system
    prompt."""

    preamble: str
    first_system_prefix: str
    prefixes: dict[str, str]
    suffixes: dict[str, str]
    generation_prompt: str
    supports_system: bool
    trim_content: bool = False  # the template strips whitespace around each message (Llama 3 does)

    def render(self, messages: list[tuple[str, str]], add_generation_prompt: bool) -> str:
        parts: list[str] = []
        for i, (role, content) in enumerate(messages):
            if role == "system":
                if i != 0 or not self.supports_system:
                    raise ValueError("a system message is only allowed first, and only if the template has one")
                parts.append(self.first_system_prefix)
            else:
                parts.append((self.preamble if i == 0 else "") + self.prefixes[role])
            parts.append((content.strip() if self.trim_content else content) + self.suffixes[role])
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[tuple[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _split(text: str, contents: list[str], source: str) -> list[str]:
    """The template text around each probe content: len(contents) + 1 pieces."""
    pieces = []
    rest = text
    for content in contents:
        before, found, rest = rest.partition(content)
        if not found:
            raise _refuse(source, "it changes or drops message content (a probe message did not come back verbatim)")
        pieces.append(before)
    pieces.append(rest)
    return pieces


def _strip_prefix(text: str, prefix: str, source: str, what: str) -> str:
    if not text.startswith(prefix):
        raise _refuse(source, f"the text around {what} differs by position in the conversation")
    return text[len(prefix) :]


def _refuse(source: str, why: str) -> UserInputError:
    return UserInputError(
        f"model source {source!r}: its chat template cannot be reduced to fixed role prefixes and suffixes "
        f"for the phone wrappers: {why}. Fix: use a model whose chat template formats each message "
        "independently, or set the model's chat_template to such a template"
    )


def _probe(role: str, n: int) -> str:
    return _PROBE.format(role, n)


def reduce_chat_template(tokenizer: PreTrainedTokenizerBase, source: str) -> ChatFormat:
    """Reduce and verify; raises UserInputError naming the model when the template is not reducible."""
    try:
        return _reduce(tokenizer, source)
    except UserInputError:
        raise
    except Exception as exc:  # a template that raises on a probe (e.g. a role it rejects)
        raise _refuse(source, f"rendering a probe conversation failed ({type(exc).__name__}: {exc})") from None


def _reduce(tokenizer: PreTrainedTokenizerBase, source: str) -> ChatFormat:
    u1, a1, u2 = _probe("user", 1), _probe("assistant", 1), _probe("user", 2)
    turns = [("user", u1), ("assistant", a1), ("user", u2)]
    closed = _render(tokenizer, turns, add_generation_prompt=False)
    opened = _render(tokenizer, turns, add_generation_prompt=True)
    generation_prompt = _strip_prefix(opened, closed, source, "the generation prompt")
    start, user_then_assistant, assistant_then_user, user_suffix = _split(closed, [u1, a1, u2], source)
    assistant_suffix = _split(_render(tokenizer, [("assistant", a1)], False), [a1], source)[1]
    user_prefix = _strip_prefix(assistant_then_user, assistant_suffix, source, "an assistant message")
    prefixes = {
        "user": user_prefix,
        "assistant": _strip_prefix(user_then_assistant, user_suffix, source, "a user message"),
    }
    suffixes = {"user": user_suffix, "assistant": assistant_suffix}
    preamble = _strip_suffix(start, user_prefix, source, "the first user message")
    first_system_prefix, supports_system = "", True
    s1 = _probe("system", 1)
    try:
        with_system = _render(tokenizer, [("system", s1), ("user", u1)], False)
    except Exception:
        supports_system = False  # e.g. Gemma: "System role not supported"
    if supports_system:
        first_system_prefix, system_then_user, _ = _split(with_system, [s1, u1], source)
        suffixes["system"] = _strip_suffix(system_then_user, user_prefix, source, "a system message")
    mismatch = ""
    for trim in (False, True):
        chat = ChatFormat(preamble, first_system_prefix, prefixes, suffixes, generation_prompt, supports_system, trim)
        mismatch = next((text for text, rendered in _checks(tokenizer, chat) if text != rendered), "")
        if not mismatch:
            return chat
    raise _refuse(source, f"re-rendering a sample conversation differs from the template ({mismatch!r})")


def _strip_suffix(text: str, suffix: str, source: str, what: str) -> str:
    if not text.endswith(suffix):
        raise _refuse(source, f"the text around {what} differs by position in the conversation")
    return text[: len(text) - len(suffix)]


def _conversations(chat: ChatFormat) -> list[tuple[list[tuple[str, str]], bool]]:
    """The sample conversations this template can render, each without and with the generation prompt."""
    usable = [list(c) for c in SAMPLE_CONVERSATIONS if chat.supports_system or all(r != "system" for r, _ in c)]
    return [(conversation, add) for conversation in usable for add in (False, True)]


def _checks(tokenizer: PreTrainedTokenizerBase, chat: ChatFormat) -> list[tuple[str, str]]:
    """(the template's own text, the reduction's text) for every sample conversation."""
    return [(_render(tokenizer, c, add), chat.render(c, add)) for c, add in _conversations(chat)]


def sample_renders(tokenizer: PreTrainedTokenizerBase, chat: ChatFormat) -> list[dict[str, Any]]:
    """Golden data for the platform tests: sample conversations and the template's own rendering."""
    return [
        {
            "messages": [{"role": r, "content": c} for r, c in conversation],
            "add_generation_prompt": add,
            "text": _render(tokenizer, conversation, add),
        }
        for conversation, add in _conversations(chat)
    ]
