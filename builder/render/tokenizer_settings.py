"""What the generated on-device tokenizers need from a Hugging Face tokenizer.json, reduced to small JSON dicts.

The Kotlin and Swift tokenizers reproduce the `tokenizers` library exactly for the pipelines they know, so each
function here refuses a tokenizer.json with anything they would not reproduce (a UserInputError naming the file,
what was found and the fix) instead of letting a package ship that silently tokenizes differently.

- `wordpiece_settings`: BERT WordPiece (BertNormalizer, BertPreTokenizer, [CLS] ... [SEP]) for encoders.
- `bpe_settings`: byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2 style) for decoders. Split patterns are
  Oniguruma regexes in tokenizer.json; they come back rewritten for ICU (NSRegularExpression), and a pattern using
  syntax whose meaning differs between the two engines is refused.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from builder.errors import UserInputError

# The split the ByteLevel pre-tokenizer does itself when use_regex is true (tokenizers' byte_level.rs).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD", "Lowercase")
SPLIT_BEHAVIORS = {
    "Isolated": "isolated",
    "Removed": "removed",
    "MergedWithPrevious": "merged_with_previous",
    "MergedWithNext": "merged_with_next",
    "Contiguous": "contiguous",
}
# Unicode general categories: \p{..} names whose sets Oniguruma and ICU agree on.
_GENERAL_CATEGORIES = frozenset({
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Co", "Cn", "Cs",
})  # fmt: skip
_BPE_FIX = "Fix: use a byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3 or Qwen2 style)"


def _load(tokenizer_json: Path) -> dict[str, Any]:
    try:
        return json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"{tokenizer_json}: cannot read the tokenizer ({exc}). Fix: save it with tokenizer.save_pretrained"
        ) from exc


def _added_tokens(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Tokens split out of the text before normalization, with the flags that decide where they match."""
    return [
        {
            "id": int(token["id"]),
            "content": token["content"],
            "special": bool(token.get("special", False)),
            "normalized": bool(token.get("normalized", not token.get("special", False))),
            "lstrip": bool(token.get("lstrip", False)),
            "rstrip": bool(token.get("rstrip", False)),
            "single_word": bool(token.get("single_word", False)),
        }
        for token in data.get("added_tokens") or []
        if token.get("content")
    ]


def wordpiece_settings(tokenizer_json: Path) -> dict[str, Any]:
    """What the Kotlin and Swift WordPiece tokenizers need; refuses tokenizers they would not reproduce exactly."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model, normalizer = data.get("model", {}), data.get("normalizer") or {}
    pre = (data.get("pre_tokenizer") or {}).get("type")
    if model.get("type") != "WordPiece" or normalizer.get("type") != "BertNormalizer" or pre != "BertPreTokenizer":
        raise UserInputError(
            f"{tokenizer_json}: the Android wrapper's tokenizer reproduces BERT WordPiece tokenizers only "
            f"(found model {model.get('type')}, normalizer {normalizer.get('type')}, pre-tokenizer {pre}). "
            "Fix: use a BERT-family encoder tokenizer"
        )
    vocab = model["vocab"]
    missing = [token for token in ("[CLS]", "[SEP]", model.get("unk_token", "[UNK]")) if token not in vocab]
    if missing:
        raise UserInputError(
            f"{tokenizer_json}: the WordPiece vocabulary has no {missing[0]} token, which BERT-style encoders "
            "frame every text with. Fix: use a BERT-family encoder tokenizer"
        )
    lowercase = bool(normalizer.get("lowercase", True))
    strip_accents = normalizer.get("strip_accents")
    return {
        "lowercase": lowercase,
        "strip_accents": lowercase if strip_accents is None else bool(strip_accents),
        "clean_text": bool(normalizer.get("clean_text", True)),
        "handle_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "unk_token": model.get("unk_token", "[UNK]"),
        "prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "cls_id": vocab["[CLS]"],
        "sep_id": vocab["[SEP]"],
        # Matched in the raw text before normalization (as [MASK] in "a [MASK] b"); the Swift tokenizer uses them.
        "added_tokens": _added_tokens(data),
        "vocab": [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])],
    }


# ---- Oniguruma -> ICU ------------------------------------------------------------------------------------------


class _RegexError(ValueError):
    pass


def _hex_literal(code: int) -> str:
    return f"\\x{{{code:x}}}"


def _escape(pattern: str, i: int) -> tuple[str, int]:
    """The ICU spelling of the escape at pattern[i] (a backslash) and the index after it."""
    if i + 1 >= len(pattern):
        raise _RegexError("a trailing backslash")
    c = pattern[i + 1]
    simple = {"s": r"\p{White_Space}", "S": r"\P{White_Space}", "d": r"\p{Nd}", "D": r"\P{Nd}"}
    if c in simple:  # ICU's \s is documented as [\t\n\f\r\p{Z}]; Oniguruma's is White_Space: say which
        return simple[c], i + 2
    if c in "rntf":
        return "\\" + c, i + 2
    if c in "pP":
        end = pattern.find("}", i)
        if i + 2 >= len(pattern) or pattern[i + 2] != "{" or end < 0:
            raise _RegexError(f"\\{c} without braces")
        name = pattern[i + 3 : end]
        negate = name.startswith("^")
        name = name.removeprefix("^")
        if name not in _GENERAL_CATEGORIES:
            raise _RegexError(f"the property \\{c}{{{name}}} (only general categories are supported)")
        upper = (c == "P") != negate
        return ("\\P" if upper else "\\p") + "{" + name + "}", end + 1
    if c == "x":
        if pattern.startswith("{", i + 2):
            end = pattern.find("}", i)
            digits = pattern[i + 3 : end] if end > 0 else ""
            if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
                raise _RegexError("a malformed \\x{...}")
            return _hex_literal(int(digits, 16)), end + 1
        digits = pattern[i + 2 : i + 4]
        if not re.fullmatch(r"[0-9a-fA-F]{2}", digits) or int(digits, 16) > 0x7F:
            raise _RegexError("\\xHH above 7F (a raw byte in Oniguruma, a code point in ICU)")
        return _hex_literal(int(digits, 16)), i + 4
    if c == "u":
        digits = pattern[i + 2 : i + 6]
        if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            raise _RegexError("a malformed \\uHHHH")
        return _hex_literal(int(digits, 16)), i + 6
    if c.isascii() and not c.isalnum():
        return "\\" + c, i + 2  # an escaped metacharacter or punctuation: a literal in both engines
    raise _RegexError(f"the escape \\{c} (its meaning differs between Oniguruma and ICU or it is unsupported)")


def _literal(c: str) -> str:
    if c.isascii() and not c.isalnum():
        return "\\" + c  # quoted: ICU sets give some ASCII punctuation and whitespace a meaning of their own
    if not c.isprintable():
        return _hex_literal(ord(c))
    return c


def _class(pattern: str, i: int) -> tuple[str, int]:
    """The ICU spelling of the bracket expression starting at pattern[i] ('[') and the index after it."""
    out = ["["]
    i += 1
    if pattern.startswith("^", i):
        out.append("^")
        i += 1
    first = True
    while True:
        if i >= len(pattern):
            raise _RegexError("an unterminated [...]")
        c = pattern[i]
        if c == "]" and not first:
            return "".join(out) + "]", i + 1
        if c == "]" or c == "[" or pattern.startswith(("&&", "--", "[:"), i):
            raise _RegexError("nested sets, set operations or a leading ']' in a [...]")
        if c == "\\":
            text, i = _escape(pattern, i)
            out.append(text)
        elif c == "-" and not first and i + 1 < len(pattern) and pattern[i + 1] != "]":
            out.append("-")  # a range between the previous and the next item
            i += 1
        else:
            out.append(_literal(c))
            i += 1
        first = False


_QUANTIFIER = re.compile(r"\{(\d+)(,(\d*))?\}")


def icu_pattern(pattern: str) -> str:
    """`pattern` (Oniguruma, as in tokenizer.json) rewritten for ICU with the same matches; ValueError when it uses
    syntax this translation does not know to mean the same in both engines."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            text, i = _escape(pattern, i)
            out.append(text)
        elif c == "[":
            text, i = _class(pattern, i)
            out.append(text)
        elif c == "(":
            for opener in ("(?:", "(?i:", "(?=", "(?!", "(?<=", "(?<!", "(?>"):
                if pattern.startswith(opener, i):
                    out.append(opener)
                    i += len(opener)
                    break
            else:
                if pattern.startswith("(?", i):
                    raise _RegexError("a (?...) group other than (?:, (?i:, lookaround and atomic groups")
                out.append("(")
                i += 1
        elif c in ")|":
            out.append(c)
            i += 1
        elif c in "*+?":
            if not out or out[-1] in ("(", "|") or out[-1].startswith("(?"):
                raise _RegexError(f"a quantifier {c} with nothing to repeat")
            out.append(c)
            i += 1
            if i < len(pattern) and pattern[i] in "?+":  # lazy or possessive: the same in both engines
                out.append(pattern[i])
                i += 1
        elif c == "{":
            match = _QUANTIFIER.match(pattern, i)
            if not match or not out:
                raise _RegexError("a '{' that is not a {n}, {n,} or {n,m} quantifier")
            out.append(match.group(0))
            i = match.end()
            if pattern.startswith("+", i):
                raise _RegexError("'{n,m}+' (possessive in ICU, a nested repeat in Oniguruma)")
            if pattern.startswith("?", i):
                out.append("?")
                i += 1
        elif c in ".^$]}":
            raise _RegexError(f"'{c}' (its meaning differs between Oniguruma and ICU)")
        else:
            out.append(_literal(c))
            i += 1
    return "".join(out)


# ---- byte-level BPE --------------------------------------------------------------------------------------------


def _refuse(tokenizer_json: Path, found: str, fix: str = _BPE_FIX) -> UserInputError:
    return UserInputError(f"{tokenizer_json}: the iOS wrapper's tokenizer cannot reproduce {found}. {fix}")


def _normalizers(tokenizer_json: Path, normalizer: dict[str, Any] | None) -> list[str]:
    if normalizer is None:
        return []
    steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    names = []
    for step in steps or []:
        kind = (step or {}).get("type")
        if kind == "Sequence":
            names += _normalizers(tokenizer_json, step)
        elif kind in NORMALIZERS:
            names.append(kind)
        else:
            raise _refuse(
                tokenizer_json,
                f"the normalizer {kind} (it knows {', '.join(NORMALIZERS)} and Sequences of them)",
            )
    return names


def _split_pattern(tokenizer_json: Path, pattern: dict[str, Any], found: str) -> str:
    if "Regex" in pattern:
        source = pattern["Regex"]
        try:
            return icu_pattern(source)
        except _RegexError as exc:
            raise _refuse(
                tokenizer_json,
                f"the {found} pattern {source!r}: it uses {exc}",
                "Fix: use a tokenizer whose Split patterns use classes, \\s, \\p{..}, groups, lookaheads and "
                "quantifiers only (as GPT-2, Llama 3 and Qwen2 do)",
            ) from exc
    literal = pattern.get("String")
    if not literal:
        raise _refuse(tokenizer_json, f"the {found} pattern {pattern!r}")
    return "".join(_literal(c) for c in literal)


def _pre_tokenizers(tokenizer_json: Path, pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The pipeline's split steps; byte-level mapping is implied after them and must come last in the file."""
    if pre is None:
        raise _refuse(tokenizer_json, "a tokenizer without a pre-tokenizer (byte-level BPE needs ByteLevel)")
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    out: list[dict[str, Any]] = []
    byte_level = False
    for step in steps or []:
        kind = (step or {}).get("type")
        if byte_level:
            raise _refuse(tokenizer_json, f"the pre-tokenizer {kind} after ByteLevel (ByteLevel must come last)")
        if kind == "ByteLevel":
            if step.get("add_prefix_space", False):
                raise _refuse(
                    tokenizer_json,
                    "ByteLevel with add_prefix_space=true (found in the pre-tokenizer)",
                    "Fix: set add_prefix_space to false in tokenizer.json's pre_tokenizer (the tokens of text that "
                    "starts with a space do not change) or use a tokenizer without it",
                )
            if step.get("use_regex", True):
                out.append({"type": "split", "pattern": icu_pattern(GPT2_PATTERN), "behavior": "isolated"})
            byte_level = True
        elif kind == "Split":
            if step.get("invert", False):
                raise _refuse(tokenizer_json, "a Split pre-tokenizer with invert=true")
            behavior = step.get("behavior")
            if behavior not in SPLIT_BEHAVIORS:
                raise _refuse(tokenizer_json, f"a Split pre-tokenizer with behavior {behavior}")
            pattern = _split_pattern(tokenizer_json, step.get("pattern") or {}, "Split")
            out.append({"type": "split", "pattern": pattern, "behavior": SPLIT_BEHAVIORS[behavior]})
        elif kind == "Digits":
            out.append({"type": "digits", "individual_digits": bool(step.get("individual_digits", False))})
        else:
            raise _refuse(
                tokenizer_json,
                f"the pre-tokenizer {kind} (it knows ByteLevel, Split, Digits and Sequences of them; "
                "Metaspace and other SentencePiece-style pipelines are not byte-level BPE)",
            )
    if not byte_level:
        raise _refuse(tokenizer_json, f"the pre-tokenizer {pre.get('type')} without ByteLevel")
    return out


def _decoder_is_byte_level(decoder: dict[str, Any] | None) -> bool:
    if decoder is None:
        return False
    if decoder.get("type") == "Sequence":
        steps = decoder.get("decoders") or []
        return len(steps) == 1 and _decoder_is_byte_level(steps[0])
    return decoder.get("type") == "ByteLevel"


def _check_distinct(tokenizer_json: Path, tokens: list[str]) -> None:
    """Swift strings compare by canonical equivalence: two tokens that differ only in Unicode normalization would
    collapse into one dictionary key."""
    seen: dict[str, str] = {}
    for token in tokens:
        key = unicodedata.normalize("NFD", token)
        other = seen.setdefault(key, token)
        if other != token:
            raise _refuse(
                tokenizer_json,
                f"a vocabulary with the canonically equivalent tokens {other!r} and {token!r} "
                "(Swift strings cannot tell them apart)",
                "Fix: use a tokenizer whose vocabulary has no such pair",
            )


def bpe_settings(tokenizer_json: Path) -> dict[str, Any]:
    """What the Swift byte-level BPE tokenizer needs beside tokenizer.json (which it reads for the vocabulary and
    merges); refuses tokenizers it would not reproduce exactly.

    Keys: normalizers (list of "NFC", "NFD", "NFKC", "NFKD", "Lowercase", applied in order), pre_tokenizers
    (list of {"type": "split", "pattern": ICU regex, "behavior": isolated | removed | merged_with_previous |
    merged_with_next | contiguous} and {"type": "digits", "individual_digits": bool}), byte_level (always true: the
    GPT-2 byte-to-unicode mapping after the splits), ignore_merges, unk_id (int or null), fuse_unk, added_tokens
    (list of {id, content, special, normalized, lstrip, rstrip, single_word}).
    """
    data = _load(tokenizer_json)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise _refuse(tokenizer_json, f"the model {model.get('type')} (it reproduces BPE only)")
    if model.get("byte_fallback", False):
        raise _refuse(
            tokenizer_json,
            "BPE with byte_fallback=true (SentencePiece-style <0xNN> tokens)",
            "Fix: use a byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3 or Qwen2 style), not a SentencePiece one",
        )
    if model.get("dropout") not in (None, 0, 0.0):
        raise _refuse(
            tokenizer_json,
            f"BPE dropout {model.get('dropout')} (random merges)",
            "Fix: set model.dropout to null in tokenizer.json (dropout is for training)",
        )
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise _refuse(tokenizer_json, f"BPE with {key} {model[key]!r}")
    normalizers = _normalizers(tokenizer_json, data.get("normalizer"))
    pre_tokenizers = _pre_tokenizers(tokenizer_json, data.get("pre_tokenizer"))
    decoder = data.get("decoder")
    if not _decoder_is_byte_level(decoder):
        raise _refuse(tokenizer_json, f"the decoder {(decoder or {}).get('type')} (it decodes with ByteLevel only)")
    vocab: dict[str, int] = model.get("vocab") or {}
    added = _added_tokens(data)
    _check_distinct(tokenizer_json, list(vocab))
    _check_distinct(tokenizer_json, list({t["content"] for t in added}))
    unk_token = model.get("unk_token")
    unk_id = None
    if unk_token is not None:
        if unk_token not in vocab:
            raise _refuse(
                tokenizer_json,
                f"BPE with unk_token {unk_token!r} missing from the vocabulary",
                "Fix: set model.unk_token to null or to a token of the vocabulary",
            )
        unk_id = vocab[unk_token]
    return {
        "normalizers": normalizers,
        "pre_tokenizers": pre_tokenizers,
        "byte_level": True,
        "ignore_merges": bool(model.get("ignore_merges", False)),
        "unk_id": unk_id,
        "fuse_unk": bool(model.get("fuse_unk", False)),
        "added_tokens": added,
    }
