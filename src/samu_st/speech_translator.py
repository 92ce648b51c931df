"""A small Python API over a translator folder (a step-3 ``final/`` or an exported one)::

from samu_st import SpeechTranslator
st = SpeechTranslator.from_pretrained("runs/st/final")
st.translate(["a.wav", "b.mp3"], language="fr")  # → ["...", "..."]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import SpeechEncoderDecoderModel

from samu_st.audio import load_audio, normalize
from samu_st.data.collate import collate_audio
from samu_st.decoding.translate import DecodeOptions, generate_batch
from samu_st.models.tokenizer import TargetTokenizer, source_language
from samu_st.models.translator import load_translator


@dataclass(frozen=True)
class SpeechTranslator:
    """A loaded translator (eval mode) and its target tokenizer."""

    model: SpeechEncoderDecoderModel
    tokenizer: TargetTokenizer

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device = "cpu"
    ) -> SpeechTranslator:
        """Load a folder written by step 3 or by ``samu-st export``."""
        loaded = load_translator(folder, device)
        loaded.model.eval()
        return cls(loaded.model, loaded.tokenizer)

    def translate(
        self,
        paths: Sequence[str | Path],
        language: str,
        options: DecodeOptions | None = None,
    ) -> list[str]:
        """English translations of the audio files ``paths`` spoken in source ``language``
        (a CoVoST-2 code or its MBART-50 code), in input order, one batch of at most
        ``options.max_batch_size`` clips at a time (batching does not change the outputs)."""
        if isinstance(paths, (str, Path)):
            raise TypeError("translate() takes a sequence of paths, not one path")
        opts = options or DecodeOptions()
        lang = source_language(language)
        step = opts.max_batch_size or max(1, len(paths))
        out: list[str] = []
        for start in range(0, len(paths), step):
            out += self._batch([Path(p) for p in paths[start : start + step]], lang, opts)
        return out

    def _batch(self, paths: Sequence[Path], lang: str, opts: DecodeOptions) -> list[str]:
        items = [
            {"wav": normalize(load_audio(p)), "id": str(p), "language": lang, "index": i}
            | {"source_text": "", "target_text": ""}
            for i, p in enumerate(paths)
        ]
        batch = collate_audio(items)  # rows in input order
        return generate_batch(
            self.model,
            self.tokenizer,
            batch.input_values,
            batch.lengths,
            batch.languages,
            num_beams=opts.num_beams,
            length_penalty=opts.length_penalty,
            max_new_tokens=opts.max_new_tokens,
            engine=opts.engine,
        )
