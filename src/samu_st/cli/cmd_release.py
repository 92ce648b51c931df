"""``samu-st release RECIPE``: rebuild the shipped mini-XLS-R and mini-MBART-50 checkpoints."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

_ENCODER_CARD = """
A small wav2vec 2.0 encoder (the `mini` preset of samu-st: 64-channel conv front end, 4
Transformer layers of 192) pretrained from scratch with the wav2vec 2.0 contrastive and
diversity losses (transformers' `Wav2Vec2ForPreTraining`) on synthetic multilingual speech:
espeak-ng in every language it speaks, saying runs of frequent words (wordfreq), numbers,
dates and amounts. It stands in for XLS-R in samu-st's CPU demo: the demo starts from it as the
paper starts from XLS-R. Only mini-CoVoST's TRAINING voice variants speak in its corpus.
float16 tensors, float32 config: `Wav2Vec2Model.from_pretrained` loads it in float32.
Not a speech model for real recordings: synthetic voices only.
"""

_DECODER_CARD = """
A small MBART (the `mini` preset of samu-st: 3 + 3 layers of 256) pretrained with mBART's text
infilling on synthetic text (runs of frequent words from wordfreq and numbers written out with
num2words) in English and the 18 CoVoST-2 source languages that MBART-50 has, with MBART-50's
tokenizer layout (a sentencepiece Unigram model, then the 52 language codes, then `<mask>`;
text `<lang> words </s>`). Catalan and Welsh have no code, as in MBART-50; samu-st's step 3
adds them. It stands in for MBART-50 in samu-st's CPU demo (LNA-D fine-tuning of its decoder).
float16 tensors, float32 config: `MBartForConditionalGeneration.from_pretrained` loads float32.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "release",
        help="rebuild the shipped mini-XLS-R / mini-MBART-50 checkpoints from their recipe",
        description="Run the recipe of the packaged checkpoints (recipes/mini-release.yaml): "
        "synthesise the pretraining corpora, train the MBART-50-layout tokenizer, pretrain "
        "the encoder (wav2vec2 SSL) and the MBART (text denoising), then write float16 "
        "safetensors folders with model cards into --package-into. Finished stages are reused.",
    )
    parser.add_argument("recipe", type=Path, metavar="RECIPE", help="YAML recipe")
    parser.add_argument(
        "--package-into",
        type=Path,
        default=None,
        help="where the two checkpoint folders go (default: the package's resources)",
    )
    parser.add_argument(
        "--no-package", action="store_true", help="train only; do not write the checkpoints"
    )
    parser.set_defaults(func=run)


def _timed(out_dir: Path, stage: str, work: Any) -> tuple[Path, dict[str, Any]]:
    """Run ``work()``; the wall time of its first complete run is kept in ``<stage>.time.json``
    (a rerun that only reuses the finished stage keeps the original time)."""
    record = out_dir / f"{stage}.time.json"
    start = time.monotonic()
    folder = Path(work())
    if not record.is_file():
        from samu_st.atomic import write_text_atomic

        seconds = json.dumps({"seconds": round(time.monotonic() - start, 1)}) + "\n"
        write_text_atomic(record, seconds, point="release.time")
    return folder, json.loads(record.read_text())


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    from samu_st import release
    from samu_st.atomic import replace_folder
    from samu_st.config import load_step_config
    from samu_st.steps.pretrain import PretrainConfig, run_pretrain
    from samu_st.steps.pretrain_text import PretrainTextConfig, run_pretrain_text

    cfg = release.load_release_config(args.recipe)
    out = Path(cfg.out_dir)
    corpus, tokenizer = release.corpus_and_tokenizer(cfg)
    ssl = load_step_config(PretrainConfig, args.recipe, "pretrain", [])
    text = load_step_config(PretrainTextConfig, args.recipe, "pretrain_text", [])
    encoder, ssl_s = _timed(out, "pretrain", lambda: run_pretrain(ssl, resume=True))
    decoder, text_s = _timed(out, "pretrain_text", lambda: run_pretrain_text(text, resume=True))
    if args.no_package:
        print(encoder, decoder, sep="\n")
        return 0
    dest = args.package_into or release.packaged_dir()
    dest.mkdir(parents=True, exist_ok=True)
    common = {
        "recipe": str(args.recipe),
        "machine": release.machine(),
        "date": date.today().isoformat(),
        **release.summary(cfg),
    }
    built = []
    for name, timing, step, card in (
        (release.ENCODER, ssl_s, ssl, _ENCODER_CARD),
        (release.DECODER, text_s, text, _DECODER_CARD),
    ):
        tmp = dest / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if name == release.ENCODER:
            release.package_encoder(encoder, tmp)
            data = f"{corpus}/unlabeled.jsonl: {common['corpus']['hours']} h, "
            data += f"{common['corpus']['clips']} clips, {common['corpus']['voices']} voices"
        else:
            release.package_decoder(decoder, tokenizer, cfg.tokenizer_pieces, tmp)
            data = f"{corpus}/text: {sum(common['corpus']['text_lines'].values())} lines"
        facts = {
            **common,
            "command": f"samu-st release {args.recipe}",
            "updates": step.train.max_steps,
            "seed": step.train.seed,
            "wall_minutes": round(float(timing["seconds"]) / 60, 1),
            "wall_note": timing.get("note", f"torch threads {torch_threads()}"),
            "data": data,
        }
        probe = out / "probe.json"  # `samu-st probe ... --out <out_dir>/probe.json`
        if name == release.ENCODER and probe.is_file():
            facts["probe"] = release.probe_summary(json.loads(probe.read_text()))
        release.write_card(tmp, name, facts, card)
        built.append(replace_folder(tmp, dest / name, point=f"release.{name}"))
    print(*built, sep="\n")
    return 0
