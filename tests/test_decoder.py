"""Target tokenizers (trained and MBART-50) and the MBART decoder: loading, resizing, LNA-D."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from num2words import num2words
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, MBartConfig, MBartForCausalLM, MBartForConditionalGeneration

from samu_st.errors import ModelLoadError
from samu_st.languages import COVOST_CODES
from samu_st.models.decoder import (
    DecoderConfig,
    apply_lna_d,
    build_mbart,
    decoder_parameter_count,
    lna_d_parameter_count,
    load_mbart_decoder,
    mbart_config,
    set_decoder_trainable,
)
from samu_st.models.tokenizer import (
    ALL_LANGUAGES,
    TargetTokenizer,
    load_mbart50_tokenizer,
    train_target_tokenizer,
)

TEXTS = [num2words(i) for i in range(300)] + ["hello world", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def trained() -> TargetTokenizer:
    return train_target_tokenizer(TEXTS, vocab_size=200)


@pytest.fixture(scope="module")
def mbart50_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MBART-50 tokenizer folder in the hub's format: sentencepiece model + config."""
    folder = tmp_path_factory.mktemp("mbart50-tok")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS), model_writer=model, vocab_size=60, minloglevel=2
    )
    (folder / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "MBart50Tokenizer", "src_lang": "en_XX", "tgt_lang": "en_XX"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _tiny_mbart(vocab_size: int) -> MBartForConditionalGeneration:
    torch.manual_seed(0)
    config = mbart_config("tiny", vocab_size, encoder_layers=1)
    return MBartForConditionalGeneration(config)


# -- tokenizers -------------------------------------------------------------------------------


def test_trained_tokenizer_round_trip(trained: TargetTokenizer, tmp_path: Path) -> None:
    texts = ["twenty-three", "one hundred and five", "the cat sat"]
    ids = trained.encode(texts)
    assert all(seq[-1] == trained.eos_id == 2 for seq in ids)
    assert (trained.bos_id, trained.pad_id, trained.hf.unk_token_id) == (0, 1, 3)
    assert [trained.decode(seq) for seq in ids] == texts
    with_lang = [trained.lang_token_id("fr"), *ids[0]]
    assert trained.decode(with_lang) == "twenty-three"
    trained.save(tmp_path)
    again = TargetTokenizer.load(tmp_path)
    assert again.encode(texts) == ids
    assert again.language_ids == trained.language_ids
    plain = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert plain("twenty-three", add_special_tokens=False)["input_ids"] == ids[0][:-1]


@pytest.mark.parametrize("kind", ["trained", "mbart50"])
def test_every_language_has_its_own_single_token(
    kind: str, trained: TargetTokenizer, mbart50_folder: Path
) -> None:
    tok = trained if kind == "trained" else load_mbart50_tokenizer(mbart50_folder)
    ids = {code: tok.lang_token_id(code) for code in ALL_LANGUAGES}
    assert len(ALL_LANGUAGES) == len(COVOST_CODES) + 1 == 22
    assert len(set(ids.values())) == 22
    for code, token in tok.language_tokens.items():
        assert tok.hf.convert_ids_to_tokens([ids[code]]) == [token]
    with pytest.raises(KeyError, match="xx"):
        tok.lang_token_id("xx")


def test_mbart50_codes_and_new_tokens(mbart50_folder: Path, tmp_path: Path) -> None:
    base = AutoTokenizer.from_pretrained(mbart50_folder, local_files_only=True)
    tok = load_mbart50_tokenizer(mbart50_folder)
    assert tok.kind == "mbart50"
    assert len(tok) == len(base) + 2  # ca and cy are new
    assert tok.language_tokens["fr"] == "fr_XX"
    assert tok.language_tokens["zh-CN"] == "zh_CN"
    assert tok.language_tokens["en"] == "en_XX"
    assert tok.lang_token_id("fr") == base.convert_tokens_to_ids("fr_XX")
    assert tok.lang_token_id("ca") == len(base)
    assert tok.lang_token_id("cy") == len(base) + 1
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.decoder_start_id) == (0, 1, 2, 2)
    ids = tok.encode(["twenty three"])[0]
    assert tok.decode([tok.lang_token_id("cy"), *ids]) == "twenty three"
    tok.save(tmp_path)
    again = TargetTokenizer.load(tmp_path)
    assert again.language_ids == tok.language_ids
    assert again.encode(["twenty three"]) == [ids]


def test_not_an_mbart50_tokenizer(trained: TargetTokenizer, tmp_path: Path) -> None:
    trained.hf.save_pretrained(tmp_path)  # no samu_tokenizer.json, no en_XX
    with pytest.raises(ModelLoadError, match="not an MBART-50 tokenizer"):
        TargetTokenizer.load(tmp_path)
    with pytest.raises(ModelLoadError, match="nothing is downloaded"):
        TargetTokenizer.load(tmp_path / "facebook" / "mbart-large-50")


# -- loading ----------------------------------------------------------------------------------


def test_decoder_weights_load_from_seq2seq_checkpoint(tmp_path: Path) -> None:
    source = _tiny_mbart(100)
    source.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert "model.decoder.embed_tokens.weight" not in keys  # stored once, as model.shared
    decoder = load_mbart_decoder(tmp_path)
    expected = source.model.decoder.state_dict()
    got = decoder.model.decoder.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=0, rtol=0, msg=key)
    torch.testing.assert_close(decoder.lm_head.weight, source.lm_head.weight, atol=0, rtol=0)
    assert decoder.lm_head.weight is decoder.model.decoder.embed_tokens.weight
    assert decoder.config.is_decoder and decoder.config.add_cross_attention


def test_missing_or_misshaped_decoder_tensor_is_an_error(tmp_path: Path) -> None:
    _tiny_mbart(100).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.decoder.layers.1.encoder_attn.k_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"layers\.1\.encoder_attn\.k_proj\.weight"):
        load_mbart_decoder(tmp_path)
    tensors["model.decoder.layers.1.encoder_attn.k_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="shape"):
        load_mbart_decoder(tmp_path)
    with pytest.raises(ModelLoadError, match=r"does not exist|never downloads"):
        load_mbart_decoder(tmp_path / "missing")


def test_pretrained_decoder_is_resized_for_new_language_tokens(tmp_path: Path) -> None:
    source = _tiny_mbart(100)
    source.save_pretrained(tmp_path)
    decoder = build_mbart(DecoderConfig(pretrained=str(tmp_path)), vocab_size=102)
    weight = decoder.model.decoder.embed_tokens.weight
    assert weight.shape == (102, 16)
    torch.testing.assert_close(weight[:100], source.model.shared.weight, atol=0, rtol=0)
    assert not torch.equal(weight[100], weight[101])
    assert decoder.lm_head.weight is weight
    with pytest.raises(ModelLoadError, match="tokenizer has 50 tokens"):
        build_mbart(DecoderConfig(pretrained=str(tmp_path)), vocab_size=50)


# -- LNA-D ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "vocab"), [("tiny", 100), ("mini", 1027)])
def test_lna_d_trainable_counts(preset: str, vocab: int) -> None:
    decoder = build_mbart(DecoderConfig(preset=preset), vocab)  # type: ignore[arg-type]
    d, f, n = decoder.config.d_model, decoder.config.decoder_ffn_dim, decoder.config.decoder_layers
    positions = decoder.config.max_position_embeddings + 2
    attention = 4 * (d * d + d)
    layer_norm = 2 * d
    feed_forward = d * f + f + f * d + d
    total = vocab * d + positions * d + n * (2 * attention + feed_forward + 3 * layer_norm)
    total += 2 * layer_norm  # layernorm_embedding, final layer_norm
    assert (
        sum(p.numel() for p in decoder.parameters())
        == total
        == decoder_parameter_count(decoder.config)
    )
    paths = apply_lna_d(decoder)
    trainable = sum(p.numel() for p in decoder.parameters() if p.requires_grad)
    assert trainable == n * (attention + 3 * layer_norm) + 2 * layer_norm
    assert trainable == lna_d_parameter_count(decoder.config)
    assert len(paths) == 4 * n + 2
    names = {k for k, p in decoder.named_parameters() if p.requires_grad}
    for name in names:
        assert ".encoder_attn." in name or "layer_norm" in name or "layernorm_embedding" in name
    assert not decoder.model.decoder.embed_tokens.weight.requires_grad
    assert not decoder.model.decoder.layers[0].self_attn.q_proj.weight.requires_grad
    assert not decoder.model.decoder.layers[0].fc1.weight.requires_grad
    set_decoder_trainable(decoder, "full")
    assert sum(p.numel() for p in decoder.parameters() if p.requires_grad) == total
    set_decoder_trainable(decoder, "frozen")
    assert not any(p.requires_grad for p in decoder.parameters())


def test_lna_d_refuses_an_unknown_layer_norm() -> None:
    decoder = build_mbart(DecoderConfig(preset="tiny"), 50)
    decoder.model.decoder.layers[0].extra_norm = nn.LayerNorm(16)
    with pytest.raises(TypeError, match=r"layers\.0\.extra_norm"):
        apply_lna_d(decoder)


def test_paper_preset_is_mbart_large_50() -> None:
    config = mbart_config("paper")
    assert (config.vocab_size, config.d_model, config.decoder_layers) == (250054, 1024, 12)
    assert (config.decoder_attention_heads, config.decoder_ffn_dim) == (16, 4096)
    assert config.scale_embedding and config.tie_word_embeddings
    assert isinstance(config, MBartConfig)
    with torch.device("meta"):
        decoder = MBartForCausalLM(config)
    assert sum(p.numel() for p in decoder.parameters()) == decoder_parameter_count(config)
    assert lna_d_parameter_count(config) == 12 * (4 * (1024**2 + 1024) + 6 * 1024) + 4 * 1024
