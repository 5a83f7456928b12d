"""Runners over LiteRT artifacts in their real host runtimes (DESIGN §11): the .tflite in ai_edge_litert's
interpreter for logits and embeddings, and the .litertlm in LiteRT-LM, which returns text, not logits,
for a greedy generation checked against the interpreter's."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from builder.backends.litert_export import encoder_signature
from builder.quiet import quiet
from builder.tools import package_version

DECODE_SIGNATURE = "decode"
# Any large negative value masks a position: the mask is added to the attention scores before softmax.
MASKED = -1e9


def interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        return Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)


def run_on_zeros(runner: Any) -> None:
    """One call of a signature on zero inputs. The XNNPACK delegate is applied on the first call and announces
    itself on stderr, which stays off the user's terminal; a kernel the runtime lacks raises RuntimeError."""
    with quiet():
        runner(**{k: np.zeros(v["shape"], v["dtype"]) for k, v in runner.get_input_details().items()})


def _warm_runner(model: Any, signature: str) -> Any:
    runner = model.get_signature_runner(signature)
    run_on_zeros(runner)
    return runner


class TfliteDecoderRunner:
    """The decoder .tflite through its `decode` signature, one token per call, so every position has logits
    (the prefill signature returns none). The KV cache is external: fed in and taken back each call."""

    runtime = f"litert: ai_edge_litert {package_version('ai-edge-litert')} interpreter (decode signature)"

    def __init__(self, path: Path, app_runtime: LiteRtLmGeneration | None = None) -> None:
        self.app_runtime = app_runtime  # the .litertlm in LiteRT-LM, checked beside these logits
        self.decode = _warm_runner(interpreter(path), DECODE_SIGNATURE)
        inputs = self.decode.get_input_details()
        self.cache_names = sorted(name for name in inputs if name.startswith("kv_cache_"))
        self.cache_shapes = {name: (inputs[name]["shape"], inputs[name]["dtype"]) for name in self.cache_names}
        self.mask_dtype = inputs["mask"]["dtype"]
        self.cache_length = int(inputs["mask"]["shape"][-1])
        self.reset()

    def reset(self) -> None:
        self.cache = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.cache_shapes.items()}

    def _mask(self, position: int) -> np.ndarray:
        visible = np.arange(self.cache_length) <= position
        if self.mask_dtype == np.bool_:
            return visible.reshape(1, 1, 1, -1)
        return np.where(visible, 0.0, MASKED).astype(self.mask_dtype).reshape(1, 1, 1, -1)

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        rows = []
        for offset, token in enumerate(input_ids[0].tolist()):
            position = start_pos + offset
            out = self.decode(
                tokens=np.array([[token]], np.int32),
                input_pos=np.array([position], np.int32),
                mask=self._mask(position),
                **self.cache,
            )
            self.cache = {name: out[name] for name in self.cache_names}
            rows.append(out["logits"].reshape(-1))
        return torch.from_numpy(np.stack(rows).astype(np.float32))


def encoder_lengths_of(model: Any) -> list[int]:
    """The input lengths of an encoder .tflite's interpreter, from its `embed_<length>` signature names."""
    prefix = encoder_signature(0).removesuffix("0")
    return sorted(int(name.removeprefix(prefix)) for name in model.get_signature_list() if name.startswith(prefix))


def padded_inputs(lengths: list[int], input_ids: Sequence[int], attention_mask: Sequence[int]) -> dict[str, Any]:
    """The feeds of the shortest signature that holds the text (the longest, which truncates, if none does):
    the ids and mask, then padding the mask hides from attention and pooling."""
    length = min((n for n in lengths if n >= len(input_ids)), default=max(lengths))
    count = min(len(input_ids), length)
    ids = np.zeros((1, length), np.int32)
    mask = np.zeros((1, length), np.int32)
    ids[0, :count] = input_ids[:count]
    mask[0, :count] = attention_mask[:count]
    return {"input_ids": ids, "attention_mask": mask}


class TfliteEncoderRunner:
    """The encoder .tflite through its `embed_<length>` signatures, each text padded to the shortest that fits."""

    runtime = f"litert: ai_edge_litert {package_version('ai-edge-litert')} interpreter"

    def __init__(self, path: Path) -> None:
        model = interpreter(path)
        self.signatures = {n: _warm_runner(model, encoder_signature(n)) for n in encoder_lengths_of(model)}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = padded_inputs(list(self.signatures), input_ids[0].tolist(), attention_mask[0].tolist())
        out = self.signatures[feeds["input_ids"].shape[1]](**feeds)
        return torch.from_numpy(out["embedding"].astype(np.float32))[0]


@contextlib.contextmanager
def litert_lm_engine(path: Path, max_tokens: int | None, **options: Any) -> Iterator[Any]:
    """LiteRT-LM's engine over a .litertlm, logging errors only. Its XNNPACK weight cache goes to a scratch
    folder: given none, the engine writes one beside the model, into a bundle or the artifact cache."""
    import litert_lm

    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    with tempfile.TemporaryDirectory(prefix="slmpack-litert-lm-") as cache:
        with quiet():  # loading logs to stderr
            engine = litert_lm.Engine(str(path), max_num_tokens=max_tokens, cache_dir=cache, **options)
        with engine:
            yield engine


def greedy_sampler() -> Any:
    import litert_lm

    return litert_lm.SamplerConfig(top_k=1, top_p=1.0, temperature=0.0)


class LiteRtLmGeneration:
    """The .litertlm bundle in LiteRT-LM, the runtime the Android wrapper embeds. It takes text and returns
    text, so it is checked end to end: how it tokenizes the golden prompt, and its greedy reply."""

    runtime = f"LiteRT-LM {package_version('litert-lm-api')} (CPU)"

    def __init__(self, path: Path, max_tokens: int) -> None:
        self.path = path
        self.max_tokens = max_tokens

    def greedy(self, prompt_text: str, new_tokens: int) -> tuple[list[int], str]:
        """The token ids LiteRT-LM prefills for the prompt, and its greedy continuation (raw text in, as the
        wrappers feed it, with slmpack's chat template already applied). The ids include any start token the
        bundle makes the runtime prepend, which its tokenizer alone does not show."""
        session_options = {"apply_prompt_template": False, "max_output_tokens": new_tokens,
                           "sampler_config": greedy_sampler()}  # fmt: skip
        with (
            quiet(),
            litert_lm_engine(self.path, self.max_tokens, enable_benchmark=True) as engine,
            engine.create_session(**session_options) as session,
        ):
            session.run_prefill([prompt_text])
            text = session.run_decode().texts[0]
            ids = list(engine.tokenize(prompt_text))
            prepended = session.get_benchmark_info().last_prefill_token_count - len(ids)
            return [engine.bos_token_id] * prepended + ids, text
