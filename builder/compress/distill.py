"""Knowledge distillation: heal a pruned or factorized student against the original teacher for a bounded
number of steps on calibration text. Decoders learn the teacher's next-token distributions (KL at a
temperature, optionally plus the last hidden state's MSE); encoders learn its token states and pooled
embedding (cosine distance). Deterministic for a seed; on a GPU when one is present."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from builder.recipe import DistillSection

StepCallback = Callable[[int, float], None]


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _batches(windows: list[torch.Tensor], settings: DistillSection) -> list[torch.Tensor]:
    """`steps` batches of `batch_size` windows, shuffled with the seed and reused in new orders when
    the text runs out."""
    rng = random.Random(settings.seed)
    order: list[int] = []
    batches = []
    for _ in range(settings.steps):
        picked = []
        for _ in range(settings.batch_size):
            if not order:
                order = list(range(len(windows)))
                rng.shuffle(order)
            picked.append(windows[order.pop()])
        batches.append(torch.cat(picked))
    return batches


def _decoder_loss(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, settings: DistillSection) -> torch.Tensor:
    want_hidden = settings.hidden_weight > 0
    with torch.no_grad():
        t_out = teacher(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
    s_out = student(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
    temperature = settings.temperature
    t_logp = F.log_softmax(t_out.logits.float() / temperature, -1).flatten(0, 1)
    s_logp = F.log_softmax(s_out.logits.float() / temperature, -1).flatten(0, 1)
    loss = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean") * temperature**2
    if want_hidden:
        loss = loss + settings.hidden_weight * F.mse_loss(s_out.hidden_states[-1], t_out.hidden_states[-1])
    return loss


def _encoder_loss(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, _: DistillSection) -> torch.Tensor:
    mask = torch.ones_like(ids)
    with torch.no_grad():
        t_states = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
    s_states = student(input_ids=ids, attention_mask=mask).last_hidden_state
    token_distance = 1 - F.cosine_similarity(s_states, t_states, dim=-1).mean()
    pooled_distance = 1 - F.cosine_similarity(s_states.mean(1), t_states.mean(1), dim=-1).mean()
    return token_distance + pooled_distance


def distill(
    student: nn.Module,
    teacher: nn.Module,
    windows: list[torch.Tensor],
    settings: DistillSection,
    decoder: bool,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train `student` in place (it stays in eval mode: no dropout in a short healing run)."""
    torch.manual_seed(settings.seed)
    device = _device()
    student.to(device).eval()
    teacher.to(device).eval()
    loss_of = _decoder_loss if decoder else _encoder_loss
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to a tenth
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, settings.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    losses: list[float] = []
    start = time.perf_counter()
    for step, batch in enumerate(_batches(windows, settings)):
        loss = loss_of(student, teacher, batch.to(device), settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
    student.to("cpu").eval()
    teacher.to("cpu").eval()
    for p in student.parameters():
        p.grad = None
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "sequence_length": settings.sequence_length,
        "learning_rate": settings.learning_rate,
        "temperature": settings.temperature,
        "hidden_weight": settings.hidden_weight,
        "seed": settings.seed,
        "loss": ("KL + hidden-state MSE" if settings.hidden_weight > 0 else "KL") if decoder else "cosine distance",
        "loss_first": sum(head) / len(head),
        "loss_last": sum(tail) / len(tail),
        "loss_curve": [round(x, 5) for x in losses[:: max(1, len(losses) // 50)]],
        "tokens": settings.steps * settings.batch_size * settings.sequence_length,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 1),
    }
