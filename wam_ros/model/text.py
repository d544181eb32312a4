"""Language conditioning, pluggable: instruction strings -> (B, tokens, text_dim) features.

`task_table` (default) learns one embedding per distinct instruction of the training data.
`precomputed` reads a local file written by the user's own encoder (T5, CLIP, ...) or by
`wam-ros text-features`: `torch.save({instruction: tensor(tokens, text_dim)}, path)`.
`umt5` runs the umT5 encoder of Wan (transformers' UMT5EncoderModel) from a local directory,
with Wan's text convention, and caches the features per instruction (in memory, and in the
`text_embeddings` file when one is named: the same format as `precomputed`).
Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from wam_ros.model.model_config import ModelConfig


def read_feature_file(path: Path, tokens: int, dim: int) -> dict[str, Tensor]:
    """{instruction: (tokens, dim) float32} from a file of the `precomputed` format."""
    table = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: not a {{instruction: tensor}} file")
    bad = [k for k, v in table.items() if tuple(v.shape) != (tokens, dim)]
    if bad:
        raise ValueError(f"{path}: embeddings of {bad[:3]} are not ({tokens}, {dim})")
    return {k: v.float() for k, v in table.items()}


def write_feature_file(path: Path, table: Mapping[str, Tensor]) -> None:
    """Written to a temporary name of this process and renamed: a reader never sees half a file, and
    ranks of one training run that write the same cache do not write into each other's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({k: v.detach().cpu().contiguous() for k, v in table.items()}, tmp)
    tmp.replace(path)


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
        self.table = read_feature_file(file, tokens, dim)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    def register(self, instructions: Sequence[str]) -> None:
        self.forward(instructions)

    def forward(self, instructions: Sequence[str]) -> Tensor:
        unknown = sorted({t for t in instructions if t not in self.table})
        if unknown:
            raise UnknownInstruction(f"instructions {unknown} have no precomputed embedding")
        return torch.stack([self.table[t] for t in instructions]).to(self.anchor.device)


def umt5_directories(path: str | Path) -> tuple[Path, Path]:
    """(encoder dir, tokenizer dir): a Wan diffusers directory keeps them in text_encoder/ and
    tokenizer/; otherwise one directory holds both (UMT5EncoderModel and tokenizer save_pretrained)."""
    root = Path(path).expanduser()
    if (root / "text_encoder" / "config.json").is_file():
        return root / "text_encoder", root / "tokenizer"
    return root, root


def umt5_width(path: str | Path) -> int:
    """The encoder's feature width (d_model: 4096 for umt5-xxl), from its config.json alone (no
    transformers import, no weights)."""
    config = umt5_directories(path)[0] / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"text_encoder_path {path}: no {config} (a local umT5 encoder directory; never downloaded)"
        )
    return int(json.loads(config.read_text())["d_model"])


@dataclass
class LoadedUMT5:
    model: Any  # transformers.UMT5EncoderModel
    tokenizer: Any  # its tokenizer


class UMT5TextEncoder(nn.Module):
    """Wan's text features: WanPipeline._get_t5_prompt_embeds, i.e. the prompt cleaned as Wan cleans
    it, tokenized with EOS, padded/truncated to `tokens`, encoded under its attention mask, the last
    hidden state zeroed beyond the sequence length (Wan's transformer then attends to all `tokens`).

    The encoder (5.7 B parameters for umt5-xxl) is loaded on the first instruction missing from the
    cache and never becomes a submodule: it is not in the state dict, the checkpoint, the optimizer or
    .to()/.train(); it runs on the device the module is on, without gradients. register() encodes
    the instructions a run needs up front and then lets the encoder go, so a trainer or a policy
    node whose instructions are all cached holds only the features."""

    def __init__(self, path: str, tokens: int, dim: int, cache_file: str = ""):
        super().__init__()
        self.path, self.tokens, self.dim = Path(path).expanduser(), tokens, dim
        self.cache_file = Path(cache_file).expanduser() if cache_file else None
        have_cache = self.cache_file is not None and self.cache_file.is_file()
        self.cache: dict[str, Tensor] = read_feature_file(self.cache_file, tokens, dim) if have_cache else {}
        if self.path.is_dir() or not have_cache:  # without a cache, the encoder must be there
            width = umt5_width(self.path)
            if width != dim:
                raise ValueError(f"text_dim {dim} does not match the umT5 encoder's d_model {width} ({self.path})")
        self.loaded: LoadedUMT5 | None = None
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    def register(self, instructions: Sequence[str]) -> None:
        if not self.anchor.is_meta:
            self._encode_missing(instructions)
        self.loaded = None

    def forward(self, instructions: Sequence[str]) -> Tensor:
        if self.anchor.is_meta:  # a model on the meta device (memory plans) has shapes, and runs no encoder
            return torch.zeros(len(instructions), self.tokens, self.dim, device="meta")
        self._encode_missing(instructions)
        return torch.stack([self.cache[t] for t in instructions]).to(self.anchor.device)

    def _encode_missing(self, instructions: Sequence[str]) -> None:
        missing = sorted({t for t in instructions if t not in self.cache})
        if not missing:
            return
        if not self.path.is_dir():
            raise UnknownInstruction(
                f"instructions {missing} are not in the text feature cache {self.cache_file} "
                f"and the umT5 encoder directory {self.path} does not exist"
            )
        self.cache.update(zip(missing, self._encode(missing)))
        if self.cache_file is not None:
            write_feature_file(self.cache_file, self.cache)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> Tensor:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        encoder = self._load()
        batch = encoder.tokenizer(
            [prompt_clean(t) for t in texts],
            padding="max_length",
            max_length=self.tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = self.anchor.device
        mask = batch.attention_mask.to(device)
        hidden = encoder.model(batch.input_ids.to(device), mask).last_hidden_state
        # Wan keeps hidden[:seq_len] and pads with zeros; with right padding that is the mask
        return hidden.float().masked_fill(~mask.bool()[..., None], 0.0).cpu()

    def _load(self) -> LoadedUMT5:
        if self.loaded is None:
            from transformers import AutoTokenizer, UMT5EncoderModel

            model_dir, tokenizer_dir = umt5_directories(self.path)
            model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True).to(self.anchor.device).eval()
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            tokenizer.padding_side = "right"  # the zeroing above and Wan's u[:seq_len] assume it
            self.loaded = LoadedUMT5(model, tokenizer)
        return self.loaded


def make_text_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.text_encoder == "umt5":
        return UMT5TextEncoder(cfg.text_encoder_path, cfg.text_tokens, cfg.text_dim, cfg.text_embeddings)
    if cfg.text_encoder == "precomputed":
        return PrecomputedTextEncoder(cfg.text_embeddings, cfg.text_tokens, cfg.text_dim)
    return TaskTableEncoder(cfg.max_tasks, cfg.text_tokens, cfg.text_dim)
