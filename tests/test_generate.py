"""Host generation: sampling settings, stop strings and UTF-8-safe streaming, with a scripted runner."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from builder.generate import SamplerSettings, sample, stream


def _byte_tokenizer() -> PreTrainedTokenizerFast:
    # Byte-level BPE with no merges: one token per byte, so a multi-byte character spans tokens.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


class ScriptedRunner:
    """Emits a fixed token sequence, one per step, and records the positions it was called with."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.calls = script, vocab, []

    def reset(self) -> None:
        self.step = 0

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        self.calls.append((input_ids.shape[1], start_pos))
        out = torch.zeros(input_ids.shape[1], self.vocab)
        token = self.script[min(self.step, len(self.script) - 1)]
        out[-1, token] = 10.0
        self.step += 1
        return out


def _ids(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_stream_is_utf8_safe_and_stops_at_stop_string() -> None:
    tok = _byte_tokenizer()
    script = _ids(tok, "héllo wörld<END>ignored")
    runner = ScriptedRunner(script, len(tok))
    pieces = list(stream(runner, tok, _ids(tok, "hi"), SamplerSettings(max_new_tokens=64), set(), ["<END>"], 512))
    assert "".join(pieces) == "héllo wörld"
    assert all("\ufffd" not in p for p in pieces)
    # Prefill at 0 with the prompt, then one token per step at increasing positions.
    assert runner.calls[0] == (2, 0)
    assert runner.calls[1] == (1, 2)


def test_stream_stops_at_eos_and_context() -> None:
    tok = _byte_tokenizer()
    text = _ids(tok, "abc")
    runner = ScriptedRunner([*text, 5], len(tok))
    assert "".join(stream(runner, tok, [1], SamplerSettings(max_new_tokens=50), {5}, [], 512)) == "abc"
    runner = ScriptedRunner(_ids(tok, "abcdefgh"), len(tok))
    assert "".join(stream(runner, tok, [1, 2], SamplerSettings(max_new_tokens=50), set(), [], 5)) == "abc"


def test_sampler_greedy_topk_topp() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 4.9, -1.0])
    assert sample(logits, SamplerSettings(temperature=0), g) == 1
    draws = {sample(logits, SamplerSettings(temperature=1.0, top_k=2), g) for _ in range(200)}
    assert draws == {1, 2}
    draws = {sample(logits, SamplerSettings(temperature=1.0, top_p=0.3), g) for _ in range(50)}
    assert draws == {1}
