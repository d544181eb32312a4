"""Language conditioning, pluggable: instruction strings -> (B, tokens, text_dim) features.

`task_table` (default) learns one embedding per distinct instruction of the training data.
`precomputed` reads a local file written by the user's own encoder (T5, CLIP, ...):
`torch.save({instruction: tensor(tokens, text_dim)}, path)`. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from wam_ros.model.config import ModelConfig


class UnknownInstruction(ValueError):
    """An instruction the text encoder has no embedding for."""


class TaskTableEncoder(nn.Module):
    def __init__(self, max_tasks: int, tokens: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(max_tasks, tokens * dim)
        self.tokens, self.dim, self.max_tasks = tokens, dim, max_tasks
        self.tasks: list[str] = []

    def register(self, instructions: Sequence[str]) -> None:
        for text in instructions:
            if text not in self.tasks:
                if len(self.tasks) == self.max_tasks:
                    raise UnknownInstruction(f"more than max_tasks={self.max_tasks} distinct instructions")
                self.tasks.append(text)

    def forward(self, instructions: Sequence[str]) -> Tensor:
        unknown = sorted({t for t in instructions if t not in self.tasks})
        if unknown:
            raise UnknownInstruction(f"instructions {unknown} were not in the training data; known: {self.tasks}")
        index = torch.tensor([self.tasks.index(t) for t in instructions], device=self.table.weight.device)
        return self.table(index).unflatten(-1, (self.tokens, self.dim))

    def get_extra_state(self) -> dict:
        return {"tasks": list(self.tasks)}

    def set_extra_state(self, state: dict) -> None:
        self.tasks = list(state["tasks"])


class PrecomputedTextEncoder(nn.Module):
    def __init__(self, path: str, tokens: int, dim: int):
        super().__init__()
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"text_embeddings {file}: no such local file (never downloaded)")
        table = torch.load(file, map_location="cpu", weights_only=True)
        bad = [k for k, v in table.items() if tuple(v.shape) != (tokens, dim)]
        if bad:
            raise ValueError(f"{file}: embeddings of {bad[:3]} are not ({tokens}, {dim})")
        self.table = {k: v.float() for k, v in table.items()}
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    def register(self, instructions: Sequence[str]) -> None:
        self.forward(instructions)

    def forward(self, instructions: Sequence[str]) -> Tensor:
        unknown = sorted({t for t in instructions if t not in self.table})
        if unknown:
            raise UnknownInstruction(f"instructions {unknown} have no precomputed embedding")
        return torch.stack([self.table[t] for t in instructions]).to(self.anchor.device)


def make_text_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.text_encoder == "precomputed":
        return PrecomputedTextEncoder(cfg.text_embeddings, cfg.text_tokens, cfg.text_dim)
    return TaskTableEncoder(cfg.max_tasks, cfg.text_tokens, cfg.text_dim)
