"""Which model families each target lowers, decided from the model's config alone (no weights, no toolchain):
tested, untested (the build's validation gate decides) or unsupported with the reason.

`TESTED` is what tests/test_families.py proves: a tiny seeded model of each family lowered for every target
that takes its task and run in the target's host runtime against the eager model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from builder.compress.architecture import FAMILIES
from builder.errors import UserInputError
from builder.models.base import Task
from builder.targets import Target
from builder.tasks.coreml_decoder import unsupported_reason as coreml_decoder_reason

TESTED: dict[Task, tuple[str, ...]] = {
    "text-generation": ("llama", "qwen2", "qwen3", "gemma3_text", "phi3"),
    "embeddings": ("bert", "distilbert"),
}

Status = Literal["tested", "untested", "supported", "unsupported"]


@dataclass(frozen=True)
class Support:
    status: Status
    reason: str


def target_support(target: Target, config: Any, task: Task, max_context: int) -> Support:
    model_type = getattr(config, "model_type", "?")
    if task not in target.tasks:
        return Support("unsupported", f"{target.name} builds {' and '.join(target.tasks)} models, not {task}")
    if target.backend == "coreml" and task == "text-generation":
        reason = coreml_decoder_reason(config, max_context)
        if reason:
            return Support("unsupported", reason)
    if model_type in TESTED[task]:
        return Support("tested", f"tiny {model_type} models are lowered and validated on {target.name} in tests")
    return Support("untested", f"no {model_type} model is tested on {target.name}; the build's validation decides")


def compression_support(config: Any) -> Support:
    """Whether [compress] structured pruning and low-rank factorization know this family's layout."""
    family = FAMILIES.get(getattr(config, "model_type", "?"))
    if family is None:
        return Support("unsupported", "[compress] does not know where this family keeps its blocks, MLP and heads")
    parts = "mlp, layers" if family.heads_refusal else "mlp, heads, layers"
    note = f"; heads: no ({family.heads_refusal})" if family.heads_refusal else ""
    return Support("supported", f"structured pruning of {parts}{note}")


def refuse_unsupported(targets: list[Target], config: Any, task: Task, max_context: int) -> None:
    """Stop a build before any work when a target cannot lower this model."""
    for target in targets:
        support = target_support(target, config, task, max_context)
        if support.status == "unsupported":
            raise UserInputError(
                f"target {target.name} cannot build this model: {support.reason}. Fix: remove {target.name} from "
                "[[targets]] (slmpack targets --model SOURCE lists what each target can do with it)"
            )
