"""`slmpack run`: load a bundle's (or a bare .pte's, .litertlm's or .tflite's) model in its host runtime and
generate (or embed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from builder.backends.executorch_runners import PteDecoderRunner, PteEncoderRunner
from builder.errors import UserInputError
from builder.generate import SamplerSettings, stream


def _host_runnable(artifact: dict[str, Any]) -> bool:
    """An ExecuTorch artifact whose delegate this host's runtime has (a Core ML delegate runs only on Apple)."""
    from builder.backends.executorch import runtime_has_delegate
    from builder.backends.executorch_delegates import DELEGATES

    if artifact["backend"] == "litert":
        return True  # the LiteRT interpreter and LiteRT-LM run on every desktop OS
    if artifact["backend"] != "executorch":
        return False
    delegate = DELEGATES.get(artifact.get("delegate") or "")
    return delegate is None or runtime_has_delegate(delegate.backend_id)


def _check_delegates_run_here(pte: Path) -> None:
    from builder.backends.executorch import runtime_has_delegate
    from builder.inspect_pte import describe_pte

    backends = {b for m in describe_pte(pte).methods for b in m.delegated_calls}
    missing = sorted(b for b in backends if not runtime_has_delegate(b))
    if missing:
        raise UserInputError(f"{pte} delegates to {', '.join(missing)}, which this host's ExecuTorch runtime lacks "
                             "(Core ML runs only on Apple platforms). Fix: run an XNNPACK .pte here")  # fmt: skip


def _pick_artifact(bundle: Path, target: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    everywhere = [a for a in manifest["artifacts"] if _host_runnable(a)]
    runnable = [a for a in everywhere if a["target"] == target] if target else everywhere
    if not runnable:
        names = ", ".join(a["target"] for a in everywhere)
        fix = f"choose one of {names}" if names else "build a target whose runtime runs here (an XNNPACK one)"
        raise UserInputError(f"{bundle}: no host-runnable artifact{f' for {target!r}' if target else ''} (Core ML "
                             f"runs only on Apple platforms). Fix: {fix}")  # fmt: skip
    return manifest, runnable[0]


def run_artifact(
    path: Path, prompt: str, target: str | None, tokenizer_dir: Path | None, max_new_tokens: int,
    temperature: float | None, raw: bool,
) -> Iterator[str]:  # fmt: skip
    manifest: dict[str, Any] | None = None
    if path.is_dir() and (path / "manifest.json").is_file():
        manifest, entry = _pick_artifact(path, target)
        pte = path / entry["path"]
        tokenizer_dir = tokenizer_dir or path / "tokenizer"
    elif path.is_file() and path.suffix == ".litertlm":  # carries its own tokenizer
        yield from _run_litertlm(path, prompt, {}, tokenizer_dir, max_new_tokens, temperature, raw)
        return
    elif path.is_file() and path.suffix in (".pte", ".tflite"):
        pte = path
        if tokenizer_dir is None:
            raise UserInputError(
                f"{path}: a bare {path.suffix} needs --tokenizer FOLDER (the bundle's tokenizer/ folder)"
            )
        if path.suffix == ".pte":
            _check_delegates_run_here(pte)
    else:
        raise UserInputError(
            f"{path} is neither a bundle folder nor a .pte, .litertlm or .tflite file. Fix: pass one of those"
        )
    if pte.suffix == ".litertlm":
        yield from _run_litertlm(pte, prompt, manifest or {}, tokenizer_dir, max_new_tokens, temperature, raw)
        return
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    model = (manifest or {}).get("model", {})
    if model.get("task") == "embeddings" or pte.suffix == ".tflite":
        yield from _embed(pte, tokenizer, prompt)
        return
    generation = (manifest or {}).get("generation", {})
    template = model.get("chat_template") or getattr(tokenizer, "chat_template", None)
    if template and not raw:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = prompt
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    runner = PteDecoderRunner(pte)
    meta = runner_metadata(pte)
    settings = SamplerSettings(
        temperature=generation.get("temperature", 0.0) if temperature is None else temperature,
        top_p=generation.get("top_p", 1.0),
        top_k=generation.get("top_k", 0),
        max_new_tokens=max_new_tokens,
    )
    eos = set(model.get("eos_ids") or meta.get("get_eos_ids") or [])
    yield from stream(runner, tokenizer, ids, settings, eos, generation.get("stop_strings", []),
                      int(meta.get("get_max_seq_len", len(ids) + max_new_tokens + 1)))  # fmt: skip


def runner_metadata(pte: Path) -> dict[str, Any]:
    from builder.inspect_pte import describe_pte

    return {m.name: m.value for m in describe_pte(pte).methods if not m.inputs}


def _run_litertlm(
    path: Path, prompt: str, manifest: dict[str, Any], tokenizer_dir: Path | None, max_new_tokens: int,
    temperature: float | None, raw: bool,
) -> Iterator[str]:  # fmt: skip
    """Stream from LiteRT-LM, fed text as the Android wrapper feeds it: the chat template applied here (when a
    tokenizer folder is known), the bundle's sampler defaults, its stop strings cutting the reply."""
    import litert_lm

    from builder.backends.litert_runners import litert_lm_engine

    generation = manifest.get("generation", {})
    text = prompt
    if tokenizer_dir is not None and not raw:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    temperature = generation.get("temperature", 0.0) if temperature is None else temperature
    sampler = litert_lm.SamplerConfig(
        top_k=1 if temperature == 0 else (generation.get("top_k") or None),
        top_p=1.0 if temperature == 0 else generation.get("top_p", 1.0),
        temperature=temperature,
    )
    stops = [s for s in generation.get("stop_strings", []) if s]
    context = manifest.get("model", {}).get("max_context")
    options = {"apply_prompt_template": False, "max_output_tokens": max_new_tokens, "sampler_config": sampler}
    with litert_lm_engine(path, context) as engine, engine.create_session(**options) as session:
        session.run_prefill([text])
        held = ""
        for response in session.run_decode_async():
            held += response.texts[0]
            cut = min((held.find(s) for s in stops if s in held), default=-1)
            if cut >= 0:
                yield held[:cut]
                return
            # Hold back what could still become a stop string, so none is half printed.
            keep = max((len(s) - 1 for s in stops), default=0)
            safe = len(held) - keep
            if safe > 0:
                yield held[:safe]
                held = held[safe:]
        yield held


def _embed(pte: Path, tokenizer: Any, text: str) -> Iterator[str]:
    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
    if pte.suffix == ".tflite":
        from builder.backends.litert_runners import TfliteEncoderRunner

        vector = TfliteEncoderRunner(pte).embed(enc["input_ids"], enc["attention_mask"])
    else:
        vector = PteEncoderRunner(pte).embed(enc["input_ids"], enc["attention_mask"])
    head = ", ".join(f"{x:.4f}" for x in vector[:8].tolist())
    yield f"embedding dim {vector.numel()}, norm {vector.norm():.4f}: [{head}, ...]"
