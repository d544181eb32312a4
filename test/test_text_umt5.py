"""umT5 text features (Wan's convention) from a tiny random local encoder: shapes, padding, caching,
the on-disk cache, the text-features command, and no network."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from support.model_data import tiny_config
from wam_ros.cli import main as cli_main
from wam_ros.config import ConfigError
from wam_ros.model.text import PrecomputedTextEncoder, UMT5TextEncoder, UnknownInstruction, make_text_encoder

WORDS = "pick up the red block and place it in bowl fold towel open drawer".split()
DIM, TOKENS = 16, 8


def save_tiny_umt5(model_dir, tokenizer_dir) -> None:
    """A random UMT5EncoderModel and a word-level tokenizer (EOS appended, as T5's) built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=len(vocab),
        d_model=DIM,
        d_kv=4,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.5,
    )  # dropout: eval mode must be on
    UMT5EncoderModel(config).save_pretrained(model_dir)


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("umt5")
    save_tiny_umt5(root, root)
    return root


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt (a download) fails the test, even one a library catches and survives."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    assert attempts == []


def counting(encoder: UMT5TextEncoder) -> list[int]:
    calls: list[int] = []
    encoder._load().model.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_features_follow_wans_convention(umt5_dir):
    from transformers import AutoTokenizer, UMT5EncoderModel

    encoder = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)
    texts = ["pick up the red block", "fold   the towel ", "pick up the red block and place it in the bowl"]
    features = encoder(texts)
    assert features.shape == (3, TOKENS, DIM) and features.dtype == torch.float32
    # the reference: the encoder called directly, as WanPipeline._get_t5_prompt_embeds does
    tokenizer = AutoTokenizer.from_pretrained(umt5_dir, local_files_only=True)
    model = UMT5EncoderModel.from_pretrained(umt5_dir, local_files_only=True).eval()
    for text, got in zip(texts, features):
        batch = tokenizer(
            [" ".join(text.split())], padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt"
        )
        length = int(batch.attention_mask.sum())
        with torch.no_grad():
            hidden = model(batch.input_ids, batch.attention_mask).last_hidden_state[0]
        assert torch.allclose(got[:length], hidden[:length], atol=1e-6)
        assert torch.equal(got[length:], torch.zeros(TOKENS - length, DIM))  # zero-padded beyond the sequence
        assert got[:length].abs().sum(dim=-1).min() > 0
    assert (features[1, :4] != 0).all() and (features[1, 4:] == 0).all()  # "fold the towel </s>": 4 tokens
    assert (features[2] != 0).all()  # truncated to TOKENS: no padding left
    # deterministic (the dropout of the saved config is off in eval mode), and the same in a new encoder
    again = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)(texts)
    assert torch.equal(features, again)


def test_cache_runs_the_encoder_once_per_instruction(umt5_dir):
    encoder = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)
    calls = counting(encoder)
    first = encoder(["open the drawer", "fold the towel", "open the drawer"])
    assert len(calls) == 1 and sorted(encoder.cache) == ["fold the towel", "open the drawer"]
    second = encoder(["fold the towel", "open the drawer"])
    assert len(calls) == 1  # both cached: the model did not run
    assert torch.equal(second, first[[1, 0]])
    encoder(["place it in the bowl"])
    assert len(calls) == 2
    # the encoder is no part of the trained model: no parameters, no state, not moved or trained
    assert list(encoder.parameters()) == [] and encoder.state_dict() == {}
    encoder.train()
    assert not encoder.loaded.model.training
    encoder.register(["pick up the block"])
    assert encoder.loaded is None  # released once the registered instructions are cached
    # on the meta device (a training run's memory plan): shapes only, the encoder neither loads nor runs
    with torch.device("meta"):
        planned = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)
    planned.register(["fold the towel"])
    features = planned(["fold the towel", "open the drawer"])
    assert features.is_meta and features.shape == (2, TOKENS, DIM)
    assert planned.loaded is None and planned.cache == {}


def test_disk_cache_serves_without_the_encoder(umt5_dir, tmp_path):
    cache = tmp_path / "features.pt"
    encoder = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM, str(cache))
    encoder.register(["pick up the block", "open the drawer"])
    assert cache.is_file()
    # a policy node whose instructions are all cached: no encoder directory, nothing loaded
    node = UMT5TextEncoder(str(tmp_path / "absent"), TOKENS, DIM, str(cache))
    assert torch.equal(node(["open the drawer"]), encoder(["open the drawer"]))
    assert node.loaded is None
    with pytest.raises(UnknownInstruction, match="not in the text feature cache"):
        node(["fold the towel"])
    # the cache is the `precomputed` mode's file
    precomputed = PrecomputedTextEncoder(str(cache), TOKENS, DIM)
    assert torch.equal(precomputed(["pick up the block"]), encoder(["pick up the block"]))
    # a cache of another shape is refused
    with pytest.raises(ValueError, match="are not"):
        UMT5TextEncoder(str(umt5_dir), TOKENS + 1, DIM, str(cache))


def test_config_and_layouts(umt5_dir, tmp_path):
    with pytest.raises(ConfigError, match="text_encoder_path"):
        tiny_config(text_encoder="umt5")
    cfg = tiny_config(text_encoder="umt5", text_encoder_path=str(umt5_dir), text_dim=DIM, text_tokens=TOKENS)
    assert isinstance(make_text_encoder(cfg), UMT5TextEncoder)
    with pytest.raises(ValueError, match="d_model 16"):
        UMT5TextEncoder(str(umt5_dir), TOKENS, 32)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        UMT5TextEncoder("google/umt5-xxl", TOKENS, DIM)  # a hub name is not a local directory
    # a Wan diffusers directory: text_encoder/ and tokenizer/
    wan = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    save_tiny_umt5(wan / "text_encoder", wan / "tokenizer")
    texts = ["open the drawer"]
    flat = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)(texts)
    assert torch.equal(UMT5TextEncoder(str(wan), TOKENS, DIM)(texts), flat)


def test_text_features_command(umt5_dir, tmp_path, capsys):
    out = tmp_path / "instructions.pt"
    assert (
        cli_main(
            [
                "text-features",
                "--encoder",
                str(umt5_dir),
                "--out",
                str(out),
                "--tokens",
                str(TOKENS),
                "open the drawer",
                "fold the towel",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["instructions"] == ["fold the towel", "open the drawer"] and report["dim"] == DIM
    assert (
        cli_main(
            [
                "text-features",
                "--encoder",
                str(umt5_dir),
                "--out",
                str(out),
                "--tokens",
                str(TOKENS),
                "pick up the block",
            ]
        )
        == 0
    )  # an existing file is extended
    table = torch.load(out, weights_only=True)
    assert sorted(table) == ["fold the towel", "open the drawer", "pick up the block"]
    reference = UMT5TextEncoder(str(umt5_dir), TOKENS, DIM)(["fold the towel"])[0]
    assert torch.equal(table["fold the towel"], reference)
    assert cli_main(["text-features", "--encoder", str(tmp_path / "absent"), "--out", str(out), "x"]) == 2
