"""The stages of the experiment grid (see :mod:`samu_st.pipeline`), built from a
:class:`~samu_st.pipeline.PipelineConfig` and the step sections of its ``steps`` file.

Each stage loads its step's section and overrides only what the grid decides: the output
folder, the manifests, the seed, and which earlier stage's model it starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from samu_st.config import apply_overrides, from_dict, load_config, load_yaml, to_dict
from samu_st.errors import ConfigError
from samu_st.grid import HIGH_RESOURCE, TABLES, System, system_fingerprint, systems_for
from samu_st.pipeline import Context, PipelineConfig, Stage
from samu_st.pipeline_whisper import (
    DISTILL_WHISPER,
    distill_whisper_stage,
    whisper_encoder_overrides,
    whisper_eval_stage,
)

T = TypeVar("T")


def corpus_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.corpus.path)


def unlabeled_manifests(cfg: PipelineConfig) -> list[str]:
    """SSL audio: the configured manifests, else ``unlabeled.jsonl``, else the train split."""
    if cfg.corpus.unlabeled:
        return list(cfg.corpus.unlabeled)
    unlabeled = corpus_dir(cfg) / "unlabeled.jsonl"
    return (
        [str(unlabeled)]
        if unlabeled.is_file() or cfg.corpus.kind == "mini"
        else [str(corpus_dir(cfg))]
    )


def steps_data(cfg: PipelineConfig) -> dict[str, Any]:
    """The steps file as raw data, with the command line's step-section overrides applied."""
    return apply_overrides(load_yaml(cfg.steps), cfg.step_overrides)


def step_config(cls: type[T], cfg: PipelineConfig, section: str, overrides: Sequence[str]) -> T:
    """The ``section`` of the steps file with the user's and the grid's overrides applied."""
    data = steps_data(cfg)
    if section not in data or not isinstance(data[section], dict):
        raise ConfigError(f"{cfg.steps}: no `{section}:` section (needed by the pipeline)")
    raw = apply_overrides(dict(data[section]), [*overrides, f"train.seed={cfg.seed}"])
    return from_dict(cls, raw, where=f"{cfg.steps}:{section}")


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _has_dev(data: dict[str, Any]) -> bool:
    return isinstance(data.get("dev"), dict)


def _section(cfg: PipelineConfig, section: str) -> dict[str, Any]:
    data = steps_data(cfg).get(section, {})
    return data if isinstance(data, dict) else {}


def asr_manifest_overrides(cfg: PipelineConfig, section: str) -> list[str]:
    """Where step 2 / the CTC baseline read transcribed speech (``pipeline.asr_data``): their
    own section's manifests (the paper: Common Voice), or the ST corpus (the mini path)."""
    if cfg.asr_data == "section":
        return []
    corpus = _list([str(corpus_dir(cfg))])
    data = _section(cfg, section)
    keys = ("data", *(k for k in ("dev", "test") if isinstance(data.get(k), dict)))
    return [f"{k}.manifests={corpus}" for k in keys]


def asr_manifests(cfg: PipelineConfig, section: str) -> list[str]:
    """The manifests (train, dev, test) ``section`` reads under ``pipeline.asr_data``."""
    if cfg.asr_data == "corpus":
        return [str(corpus_dir(cfg))]
    data = _section(cfg, section)
    found: list[str] = []
    for key in ("data", "dev", "test"):
        part = data.get(key)
        if isinstance(part, dict):
            found += [str(m) for m in part.get("manifests", ()) if str(m) not in found]
    return found


def _manifest_overrides(cfg: PipelineConfig, section: str) -> list[str]:
    corpus = str(corpus_dir(cfg))
    out = [f"data.manifests={_list([corpus])}"]
    if _has_dev(_section(cfg, section)):
        out.append(f"dev.manifests={_list([corpus])}")
    return out


def stage_corpus(ctx: Context) -> Path:
    cfg = ctx.cfg
    if cfg.corpus.kind == "manifests":
        folder = corpus_dir(cfg)
        if not any(folder.glob("train/*.jsonl")):
            raise ConfigError(f"corpus.path: {folder} has no train/<lang>.jsonl manifests")
        return folder
    from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini

    mini = (
        load_config(MiniCovostConfig, cfg.corpus.mini_config)
        if cfg.corpus.mini_config
        else MiniCovostConfig()
    )
    return prepare_mini(corpus_dir(cfg), mini, workers=2)


def stage_pretrain(ctx: Context) -> Path:
    from samu_st.steps.pretrain import PretrainConfig, run_pretrain

    out = ctx.out("pretrain")
    over = [f"out_dir={out}", f"data.manifests={_list(unlabeled_manifests(ctx.cfg))}"]
    if _has_dev(_section(ctx.cfg, "pretrain")):
        over.append(f"dev.manifests={_list([str(corpus_dir(ctx.cfg))])}")
    return run_pretrain(step_config(PretrainConfig, ctx.cfg, "pretrain", over), resume=True)


def ssl_encoder(ctx: Context) -> str:
    return ctx.cfg.encoder_pretrained or str(ctx.outputs["pretrain"])


def stage_distill(ctx: Context) -> Path:
    from samu_st.steps.distill import DistillConfig, run_distill

    over = [f"out_dir={ctx.out('distill')}", f"encoder.pretrained={ssl_encoder(ctx)}"]
    over += asr_manifest_overrides(ctx.cfg, "distill")
    folder = run_distill(step_config(DistillConfig, ctx.cfg, "distill", over), resume=True)
    return folder / "encoder"


def stage_ctc(ctx: Context) -> Path:
    from samu_st.steps.train_ctc import TrainCtcConfig, run_train_ctc

    over = [f"out_dir={ctx.out('ctc')}", f"encoder.pretrained={ssl_encoder(ctx)}"]
    over += asr_manifest_overrides(ctx.cfg, "train_ctc")
    return run_train_ctc(step_config(TrainCtcConfig, ctx.cfg, "train_ctc", over), resume=True)


def stage_pretrain_text(ctx: Context) -> Path:
    from samu_st.steps.pretrain_text import PretrainTextConfig, run_pretrain_text

    over = [f"out_dir={ctx.out('pretrain_text')}", *_manifest_overrides(ctx.cfg, "pretrain_text")]
    cfg = step_config(PretrainTextConfig, ctx.cfg, "pretrain_text", over)
    return run_pretrain_text(cfg, resume=True)


def decoder_folder(ctx: Context) -> str:
    return ctx.cfg.decoder_pretrained or str(ctx.outputs["pretrain_text"])


def encoder_for(ctx: Context, system: System) -> str:
    if system.family == "whisper":  # whisper-samu-A: Whisper's encoder after step 2
        return str(ctx.outputs[DISTILL_WHISPER])
    if system.encoder_init == "samu":
        return str(ctx.outputs["distill"])
    if system.encoder_init == "ctc":
        return str(ctx.outputs["ctc"] / "encoder")
    return ssl_encoder(ctx)


def make_stage_st(system: System) -> Callable[[Context], Path]:
    def run(ctx: Context) -> Path:
        from samu_st.steps.train_st import TrainSTConfig, run_train_st

        over = [
            f"out_dir={ctx.out('st:' + system.name)}",
            f"model.encoder.pretrained={encoder_for(ctx, system)}",
            f"model.encoder.mode={system.encoder_mode}",
            f"model.decoder.pretrained={decoder_folder(ctx)}",
            *_manifest_overrides(ctx.cfg, "train_st"),
        ]
        if system.zero_shot:
            over.append(f"data.languages={_list(HIGH_RESOURCE)}")
        if system.family == "whisper":
            over += whisper_encoder_overrides(ctx.cfg, "model.encoder")
        return run_train_st(step_config(TrainSTConfig, ctx.cfg, "train_st", over), resume=True)

    return run


def make_stage_eval(system: System) -> Callable[[Context], Path]:
    def run(ctx: Context) -> Path:
        from samu_st.decoding.translate import DecodeOptions
        from samu_st.evaluate import EvalOptions, evaluate_model

        cfg = ctx.cfg
        out = ctx.out("eval:" + system.name)
        opts = EvalOptions(
            split=cfg.eval_split,
            name=system.name,
            max_utterances=cfg.max_eval_utterances or None,
            decode=DecodeOptions(num_beams=cfg.beam, engine=cfg.engine),
        )
        if system.kind == "whisper":
            from samu_st.models.whisper_convert import resolve_whisper_path
            from samu_st.whisper_eval import evaluate_whisper

            w = cfg.whisper
            decode = DecodeOptions(num_beams=w.num_beams, max_batch_size=w.max_batch_size,
                                   max_new_tokens=w.max_new_tokens)  # fmt: skip
            model = resolve_whisper_path(str(w.model))
            evaluate_whisper(model, corpus_dir(cfg), out, replace(opts, decode=decode))
        elif system.kind == "cascade":
            from samu_st.cascade import evaluate_cascade

            evaluate_cascade(ctx.outputs["ctc"], ctx.outputs["mt"], corpus_dir(cfg), out, opts)
        else:
            evaluate_model(ctx.outputs["st:" + system.name], corpus_dir(cfg), out, opts)
        return out / "results.json"

    return run


def stage_mt(ctx: Context) -> Path:
    if ctx.cfg.mt_pretrained:
        return Path(ctx.cfg.mt_pretrained)
    from samu_st.steps.pretrain_text import PretrainTextConfig, run_pretrain_text

    over = [
        f"out_dir={ctx.out('mt')}",
        f"init={decoder_folder(ctx)}",
        "objective=translate",
        *_manifest_overrides(ctx.cfg, "train_mt"),
    ]
    return run_pretrain_text(step_config(PretrainTextConfig, ctx.cfg, "train_mt", over), True)


def stage_report(ctx: Context) -> Path:
    from samu_st.report import report

    cfg = ctx.cfg
    out = ctx.out("report")
    results = {k.split(":", 1)[1]: v for k, v in ctx.outputs.items() if k.startswith("eval:")}
    report([results[s] for s in cfg.systems if s in results], out, "All systems")
    for table in cfg.tables:
        title, names = TABLES[table]
        files = [results[n] for n in names if n in results]
        if files:
            report(files, out / table, title)
    return out


def _given(*paths: object) -> tuple[str, ...]:
    return tuple(str(p) for p in paths if p)


def stage_inputs(cfg: PipelineConfig) -> dict[str, tuple[str, ...]]:
    """The outside files each stage reads, hashed by content into its key (outputs of other
    stages are covered by their keys). The mini corpus is an output, not an input."""
    given = cfg.corpus.kind == "manifests"
    teacher = _section(cfg, "distill").get("teacher") or {}
    tokenizer = (_section(cfg, "train_st").get("model") or {}).get("tokenizer")
    asr = cfg.asr_data == "section"
    distill_data = _given(
        teacher.get("path") if isinstance(teacher, dict) else None,
        *(asr_manifests(cfg, "distill") if asr else ()),
    )
    return {
        "corpus": _given(cfg.corpus.path) + cfg.corpus.unlabeled if given else (),
        "pretrain": (),
        "distill": (*_given(cfg.encoder_pretrained), *distill_data),
        # the Whisper folder itself is added by pipeline_whisper.distill_whisper_stage
        DISTILL_WHISPER: distill_data,
        "ctc": _given(cfg.encoder_pretrained, *(asr_manifests(cfg, "train_ctc") if asr else ())),
        "mt": _given(cfg.mt_pretrained),
        "st": _given(cfg.encoder_pretrained, cfg.decoder_pretrained, tokenizer),
        "st-whisper": _given(cfg.decoder_pretrained, tokenizer),  # its encoder: distill-whisper
    }


def build_stages(cfg: PipelineConfig) -> list[Stage]:
    """The stages the configured systems need, in dependency order."""
    chosen = systems_for(cfg.systems)
    trained = [s for s in chosen if s.kind != "whisper"]  # the whisper row needs no training
    xlsr = [s for s in trained if s.family == "wav2vec2"]  # whisper-samu-A needs no step 1
    inits = {s.encoder_init for s in xlsr}
    inputs = stage_inputs(cfg)
    stages: list[Stage] = [
        Stage(
            "corpus",
            (),
            stage_corpus,
            f"corpus ({cfg.corpus.kind}) at {cfg.corpus.path}",
            to_dict(cfg.corpus),
            inputs=inputs["corpus"],
        ),
    ]
    base: tuple[str, ...] = ("corpus",)
    if cfg.encoder_pretrained is None and xlsr:
        stages.append(
            Stage(
                "pretrain",
                base,
                stage_pretrain,
                "step 1: wav2vec2 SSL pretraining",
                _section(cfg, "pretrain"),
                collective=True,
            )
        )
        base = ("corpus", "pretrain")
    if "samu" in inits:
        stages.append(
            Stage(
                "distill",
                base,
                stage_distill,
                "step 2: SAMU semantic distillation",
                {"section": _section(cfg, "distill"), "asr_data": cfg.asr_data},
                collective=True,
                inputs=inputs["distill"],
            )
        )
    if any(s.family == "whisper" for s in trained):
        stages.append(distill_whisper_stage(cfg, _section(cfg, "distill"), inputs[DISTILL_WHISPER]))
    if "ctc" in inits:
        stages.append(
            Stage(
                "ctc",
                base,
                stage_ctc,
                "CTC fine-tuning (ctc-xlsr / cascade ASR)",
                {"section": _section(cfg, "train_ctc"), "asr_data": cfg.asr_data},
                collective=True,
                inputs=inputs["ctc"],
            )
        )
    text: tuple[str, ...] = ()
    if cfg.decoder_pretrained is None and trained:
        stages.append(
            Stage(
                "pretrain_text",
                ("corpus",),
                stage_pretrain_text,
                "text denoising pretraining of a small MBART",
                _section(cfg, "pretrain_text"),
                collective=True,
            )
        )
        text = ("pretrain_text",)
    if any(s.kind == "cascade" for s in chosen):
        stages.append(
            Stage(
                "mt",
                ("corpus", *text),
                stage_mt,
                "cascade MT: MBART text translation",
                {**_section(cfg, "train_mt"), "mt": cfg.mt_pretrained},
                collective=cfg.mt_pretrained is None,
                inputs=inputs["mt"],
            )
        )
    for system in chosen:
        whisper = system.family == "whisper"  # whisper-samu-A: Whisper's encoder after step 2
        samu = DISTILL_WHISPER if whisper else "distill"
        enc = {"ssl": base[-1], "samu": samu, "ctc": "ctc"}[system.encoder_init]
        if system.kind == "e2e":
            stages.append(
                Stage(
                    f"st:{system.name}",
                    (enc, *text),
                    make_stage_st(system),
                    f"step 3: {system.name}",
                    {"section": _section(cfg, "train_st"), "system": system_fingerprint(system)}
                    | ({"whisper_input": cfg.whisper.whisper_input} if whisper else {}),
                    collective=True,
                    inputs=inputs["st-whisper" if whisper else "st"],
                )
            )
            deps: tuple[str, ...] = (f"st:{system.name}",)
        elif system.kind == "whisper":
            stages.append(whisper_eval_stage(cfg))
            continue
        else:
            deps = ("ctc", "mt")
        stages.append(
            Stage(
                f"eval:{system.name}",
                deps,
                make_stage_eval(system),
                f"evaluate {system.name} on {cfg.eval_split}",
                {"split": cfg.eval_split, "beam": cfg.beam, "max": cfg.max_eval_utterances},
            )
        )
    evals = tuple(s.name for s in stages if s.name.startswith("eval:"))
    stages.append(
        Stage("report", evals, stage_report, "tables and plots", {"tables": list(cfg.tables)})
    )
    return stages
