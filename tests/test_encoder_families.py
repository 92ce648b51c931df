"""Encoder families (issue #18): HuBERT, WavLM, w2v-BERT 2.0 and Whisper's encoder beside
wav2vec2 — padding invariance, trainable-parameter counts per mode, real-format stand-ins that
load as transformers loads them, and distill → train-st (adapters + LNA-D) → evaluate per family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    HubertModel,
    Wav2Vec2BertModel,
    WavLMModel,
    WhisperForConditionalGeneration,
)

from fixtures_corpora import TINY_CORPUS, mini_corpus, quiet_train
from samu_st.cli import main
from samu_st.errors import ConfigError, ModelLoadError
from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.decoder import lna_d_modules
from samu_st.models.encoder import (
    EncoderConfig,
    SpeechEncoder,
    build_encoder,
    encoder_parameter_summary,
    front_end_modules,
    load_encoder,
)
from samu_st.models.family_model import WHISPER_INPUT_GAIN, padded_positions
from samu_st.models.translator import load_translator
from samu_st.steps.data import DataConfig
from samu_st.steps.distill import DistillConfig, TeacherConfig, run_distill
from standins.encoder_families import write_standin

FAMILIES = ("wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper")
WRAPPED = FAMILIES[1:]
# (family, whisper_input): Whisper in both of its window modes
VARIANTS = [(f, "pad-30s") for f in FAMILIES] + [("whisper", "trim")]
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # WavLM's eager attention (transformers) mixes a bool padding mask with a float bias
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
]


def _no_dropout(family: str) -> dict[str, float]:
    drop = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    return drop if family == "whisper" else {**drop, "feat_proj_dropout": 0.0}


def _encoder(family: str, mode: str = "adapters", **fields: Any) -> SpeechEncoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(family=family, size="tiny", mode=mode, **fields)  # type: ignore[arg-type]
    return SpeechEncoder.from_config(cfg)


@pytest.mark.parametrize(("family", "window"), VARIANTS)
def test_padding_invariance(family: str, window: str) -> None:
    """A clip alone and the same clip padded in a batch give the same states on its frames.

    For Whisper in ``pad-30s`` mode this holds because every clip, alone or not, is padded to
    the same 30-s window (the encoder itself has no padding mask); in ``trim`` mode because
    frames after each clip are zeroed before the convolutions and masked in attention."""
    encoder = _encoder(family, whisper_input=window).eval()
    with torch.no_grad():  # non-identity adapters: the hooks are on the path
        for adapter in bottleneck_adapters(encoder):
            adapter.up.weight.normal_(std=0.5)
    lengths = torch.tensor([16000, 9000, 4321])
    wav = torch.randn(3, 16000) * (torch.arange(16000)[None, :] < lengths[:, None])
    with torch.no_grad():
        batch = encoder(wav, lengths)
        assert batch.lengths.tolist() == encoder.output_lengths(lengths).tolist()
        assert batch.hidden.shape[1] == int(batch.lengths.max())
        assert torch.all(batch.hidden[~batch.mask] == 0)
        for i, n in enumerate(lengths.tolist()):
            alone = encoder(wav[i : i + 1, :n], lengths[i : i + 1])
            frames = int(alone.lengths[0])
            assert frames == int(batch.lengths[i])
            torch.testing.assert_close(
                batch.hidden[i, :frames], alone.hidden[0], atol=2e-5, rtol=1e-4
            )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_whisper_trim_masks_padding_under_either_attention(attention: str) -> None:
    """trim's padding mask is additive, so eager attention (which adds the mask to the scores)
    masks as SDPA does; the shortest clip it accepts survives Whisper's STFT padding."""
    encoder = _encoder("whisper", whisper_input="trim").eval()
    for module in encoder.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = attention
    shortest = encoder.model.min_input_samples
    lengths = torch.tensor([16000, 4321, shortest])
    wav = torch.randn(3, 16000) * (torch.arange(16000)[None, :] < lengths[:, None])
    with torch.no_grad():
        batch = encoder(wav, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = encoder(wav[i : i + 1, :n], lengths[i : i + 1])
            frames = int(alone.lengths[0])
            torch.testing.assert_close(
                batch.hidden[i, :frames], alone.hidden[0], atol=2e-5, rtol=1e-4
            )


def test_whisper_windows_differ_and_transformers_insists_on_30_seconds() -> None:
    padded = _encoder("whisper", whisper_input="pad-30s").eval()
    trimmed = _encoder("whisper", whisper_input="trim").eval()
    trimmed.model.load_state_dict(padded.model.state_dict())
    wav, lengths = torch.randn(1, 32000), torch.tensor([32000])
    with torch.no_grad():
        a, b = padded(wav, lengths), trimmed(wav, lengths)
        assert a.lengths.tolist() == b.lengths.tolist() == [100]  # 50 frames per second
        assert not torch.allclose(a.hidden, b.hidden, atol=1e-3)  # trim deviates from 30 s
        with pytest.raises(ValueError, match="3000"):  # transformers' own input-length check
            padded.model.model(torch.zeros(1, 80, 200))
        with pytest.raises(ValueError, match="30-second"):
            padded(torch.zeros(1, 31 * 16000), torch.tensor([31 * 16000]))
    # the cost: a 2-s clip is 100 positions trimmed, 1500 padded to 30 s
    assert padded_positions(trimmed.model, 32000) == 100
    assert padded_positions(padded.model, 32000) == 1500


def _adapter_count(layers: int, dim: int) -> int:
    hidden = dim // 4
    return layers * 2 * (2 * dim * hidden + hidden + dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_parameters_per_mode(family: str) -> None:
    adapters = _encoder(family, "adapters")
    counts = encoder_parameter_summary(adapters)
    assert counts["adapters"] == counts["trainable"] == _adapter_count(2, 32)
    assert len(bottleneck_adapters(adapters)) == 4  # two per layer
    full = _encoder(family, "full")
    front = sum(p.numel() for m in front_end_modules(full.model) for p in m.parameters())
    fixed = 1500 * 32 if family == "whisper" else 0  # Whisper's sinusoidal positions
    counts = encoder_parameter_summary(full)
    assert counts["adapters"] == 0 and counts["feature_encoder"] == front
    assert counts["trainable"] == counts["encoder"] - front - fixed
    assert (front == 0) == (family == "w2v-bert")  # its front end is the fbank: no weights
    with_front = _encoder(family, "full", train_feature_encoder=True)
    assert encoder_parameter_summary(with_front)["trainable"] == counts["encoder"] - fixed
    assert encoder_parameter_summary(_encoder(family, "frozen"))["trainable"] == 0


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("standins")
    return {family: write_standin(family, root / family) for family in WRAPPED}


def _reference(family: str, folder: Path, wav: np.ndarray) -> torch.Tensor:
    """What transformers itself computes from the folder: its feature extractor, its model."""
    extractor: Any = AutoFeatureExtractor.from_pretrained(str(folder))
    if family == "whisper":
        feats = extractor(wav * WHISPER_INPUT_GAIN, sampling_rate=16000, return_tensors="pt")
        model: Any = WhisperForConditionalGeneration.from_pretrained(str(folder)).model.encoder
        return model.eval()(feats["input_features"]).last_hidden_state
    feats = extractor(wav, sampling_rate=16000, return_tensors="pt")
    classes: dict[str, Any] = {
        "hubert": HubertModel, "wavlm": WavLMModel, "w2v-bert": Wav2Vec2BertModel,
    }  # fmt: skip
    model = classes[family].from_pretrained(str(folder)).eval()
    if family == "w2v-bert":
        return model(feats["input_features"], attention_mask=feats["attention_mask"])[0]
    return model(feats["input_values"])[0]


@pytest.mark.parametrize("family", WRAPPED)
def test_standin_loads_as_transformers_runs_it(family: str, standins: dict[str, Path]) -> None:
    folder = standins[family]
    wav = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    wav = (wav - wav.mean()) / wav.std()
    encoder = SpeechEncoder(load_encoder(folder, EncoderConfig(family=family)), "frozen").eval()
    with torch.no_grad():
        ours = encoder(torch.from_numpy(wav)[None], torch.tensor([wav.size]))
        reference = _reference(family, folder, wav)
    frames = int(ours.lengths[0])
    torch.testing.assert_close(ours.hidden[0], reference[0, :frames], atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelLoadError, match=f"encoder.family: {family}"):
        load_encoder(folder, EncoderConfig())
    with pytest.raises(ModelLoadError, match=f"set encoder.family: {family}"):
        build_encoder(EncoderConfig(pretrained=str(folder)))  # the wav2vec2 loader refuses it


def test_step_one_is_wav2vec2_only() -> None:
    from samu_st.steps.pretrain import PretrainConfig

    with pytest.raises(ConfigError, match="wav2vec2's contrastive pretraining"):
        PretrainConfig(out_dir="x", data=DataConfig(manifests=("x",)),
                       encoder=EncoderConfig(family="hubert"))  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_corpus(tmp_path_factory, TINY_CORPUS)


def _start(family: str, standins: dict[str, Path], tmp_path: Path) -> str:
    if family != "wav2vec2":
        return str(standins[family])
    from standins.xlsr import write_xlsr

    return str(write_xlsr(tmp_path / "xlsr"))


@pytest.mark.parametrize("family", FAMILIES)
def test_distill_train_st_evaluate(
    family: str, corpus: Path, standins: dict[str, Path], tmp_path: Path
) -> None:
    start = _start(family, standins, tmp_path)
    encoder = EncoderConfig(
        family=family,  # type: ignore[arg-type]
        pretrained=start,
        whisper_input="trim",
        **_no_dropout(family),  # type: ignore[arg-type]
    )
    distill = DistillConfig(
        out_dir=str(tmp_path / "distill"),
        data=DataConfig(manifests=(str(corpus),), max_duration=3.0),
        encoder=encoder,
        teacher=TeacherConfig(pooling="mean", text_field="target_text"),
        train=quiet_train(2, 1e-3),
    )
    samu = run_distill(distill)
    assert json.loads((samu / "samu_config.json").read_text())["encoder_family"] == family
    st = {
        "out_dir": str(tmp_path / "st"),
        "data": {"manifests": [str(corpus)], "max_duration": 3.0},
        "model": {
            "encoder": {"family": family, "pretrained": str(samu / "encoder"),
                        "mode": "adapters", "whisper_input": "trim"},
            "decoder": {"preset": "tiny"},
            "length_adaptor_layers": 1,
        },
        "train": {"max_steps": 2, "save_every": 100, "tensorboard": False,
                  "progress_bar": False},
        "tokenizer_vocab_size": 40,
        "aux_ctc_weight": 0.3,  # the CTC head reads the encoder's states (a hook per family)
    }  # fmt: skip
    config = tmp_path / "st.yaml"
    config.write_text(json.dumps({"train_st": st}))
    assert main(["train-st", str(config)]) == 0
    loaded = load_translator(tmp_path / "st" / "final")
    model = loaded.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    encoder_trainable = {n for n in trainable if n.startswith("encoder.")}
    adapters = {n for n in encoder_trainable if ".bottleneck_adapter." in n}
    assert len(bottleneck_adapters(model.encoder)) == 4
    assert encoder_trainable - adapters == {n for n in encoder_trainable if ".adapter." in n}
    lna = {id(p) for m in lna_d_modules(model.decoder).values() for p in m.parameters()}
    decoder = [p for n, p in model.named_parameters() if n.startswith("decoder.")]
    assert {id(p) for p in decoder if p.requires_grad} == lna
    assert model.config.encoder.model_type == load_encoder_type(family)
    out = tmp_path / "eval"
    argv = ["evaluate", str(tmp_path / "st" / "final"), str(corpus), "--out", str(out),
            "--beam", "2", "--max-utterances", "2", "--max-new-tokens", "4"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "st" and set(results["n_utterances"]) == {"fr", "de"}
    exported = tmp_path / "hf"
    refused = main(["export", str(tmp_path / "st" / "final"), "--out", str(exported)])
    assert (refused == 0) == (family == "wav2vec2") and exported.exists() == (refused == 0)


def load_encoder_type(family: str) -> str:
    return {"w2v-bert": "wav2vec2-bert"}.get(family, family)


@pytest.mark.parametrize("family", WRAPPED)
def test_ctc_baseline(family: str, corpus: Path, standins: dict[str, Path], tmp_path: Path) -> None:
    """train-ctc on each family: trains, exports a folder samu-st loads back with the same
    transcripts, and an encoder/ folder of the family (the ctc baseline's step-3 encoder)."""
    from samu_st.models.ctc import load_ctc_model
    from samu_st.steps.train_ctc import TrainCtcConfig, run_train_ctc

    cfg = TrainCtcConfig(
        out_dir=str(tmp_path / "ctc"),
        data=DataConfig(manifests=(str(corpus),), max_duration=10.0),
        encoder=EncoderConfig(family=family, pretrained=str(standins[family])),  # type: ignore[arg-type]
        train=quiet_train(2, 1e-3),
    )
    final = run_train_ctc(cfg)
    evaluation = json.loads((tmp_path / "ctc" / "evaluation.json").read_text())
    assert evaluation["greedy"]["cer"] >= 0.0
    model, _ = load_ctc_model(final)
    wav = torch.randn(2, 8000)
    mask = torch.ones(2, 8000, dtype=torch.long)
    mask[1, 5000:] = 0
    with torch.no_grad():
        logits = model.eval()(wav, attention_mask=mask).logits
    frames = model._get_feat_extract_output_lengths(mask.sum(-1))
    assert logits.shape[:2] == (2, int(frames.max())) and frames[1] < frames[0]
    encoder = load_encoder(final / "encoder", EncoderConfig(family=family))  # type: ignore[arg-type]
    assert not hasattr(encoder.config, "samu_ctc_model")
    # a config's dropout overrides reach a loaded CTC folder of every family
    tuned, _ = load_ctc_model(final, EncoderConfig(family=family, attention_dropout=0.37))  # type: ignore[arg-type]
    assert tuned.encoder.config.attention_dropout == 0.37
    out = tmp_path / "eval"
    assert main(["evaluate", str(final), str(corpus), "--out", str(out),
                 "--max-utterances", "2"]) == 0  # fmt: skip


@pytest.mark.parametrize("family", WRAPPED)
def test_translator_folder_round_trip(family: str, tmp_path: Path) -> None:
    """A step-3 folder of every family loads back with the same weights and outputs."""
    from fixtures_corpora import number_tokenizer
    from samu_st.models.decoder import DecoderConfig
    from samu_st.models.translator import TranslatorConfig, build_translator, save_translator

    tokenizer = number_tokenizer()
    cfg = TranslatorConfig(
        encoder=EncoderConfig(family=family, size="tiny", mode="adapters", whisper_input="trim"),  # type: ignore[arg-type]
        decoder=DecoderConfig(preset="tiny"),
        length_adaptor_layers=1,
    )
    torch.manual_seed(0)
    model = build_translator(cfg, tokenizer).eval()
    with torch.no_grad():
        for adapter in bottleneck_adapters(model.encoder):
            adapter.up.weight.normal_(std=0.5)
    save_translator(tmp_path / "final", model, tokenizer, cfg)
    loaded = load_translator(tmp_path / "final").model.eval()
    wav = torch.randn(2, 9000)
    mask = torch.ones(2, 9000, dtype=torch.long)
    mask[1, 6000:] = 0
    ids = torch.tensor([[2, 5, 7], [2, 6, 8]])
    with torch.no_grad():
        a = model(inputs=wav, attention_mask=mask, decoder_input_ids=ids).logits
        b = loaded(inputs=wav, attention_mask=mask, decoder_input_ids=ids).logits
    torch.testing.assert_close(a, b)
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}


# paper-size encoder counts (meta device): XLS-R 300M, HuBERT / WavLM large, w2v-BERT 2.0,
# Whisper large-v2's encoder; adapters 2 per layer of hidden D/4
PAPER_ENCODERS = {
    "wav2vec2": (315_438_720, 25_227_264),
    "hubert": (315_438_720, 25_227_264),
    "wavlm": (315_453_120, 25_227_264),
    "w2v-bert": (580_493_120, 25_227_264),
    "whisper": (636_784_640, 52_531_200),
}


def test_model_summary_prints_each_family_at_paper_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    paper = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    assert main(["model-summary", str(paper), "--family", "all", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == set(FAMILIES)
    for family, (encoder, adapters) in PAPER_ENCODERS.items():
        groups = counts[family]["groups"]
        assert groups["encoder"]["total"] == encoder and groups["encoder"]["trainable"] == 0
        assert groups["bottleneck_adapters"]["trainable"] == adapters
    assert main(["model-summary", str(paper), "--family", "w2v-bert"]) == 0
    assert "w2v-BERT 2.0" in capsys.readouterr().out
