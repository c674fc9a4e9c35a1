"""Command line: ``python -m course prepare|train|evaluate|generate|run|sweep|results``.

Every subcommand takes ``--budget`` (smoke, cpu, gpu: the course budgets in
``course.budgets``); bad options, budgets or data names exit with a message
and status 2 (argparse), failed notebooks or checks with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from course.budgets import BUDGET_CHOICES

DATA_NAMES = ("samsum", "textbooks")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        choices=BUDGET_CHOICES,
        default=os.environ.get("REFTX_BUDGET", "cpu"),
        help="course budget (default: $REFTX_BUDGET or cpu); <budget>-dry: its shapes for two steps",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a limit of 0 would score nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1: give how many test examples to score")
    return value


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        choices=DATA_NAMES,
        default="samsum",
        help="samsum (dialogue summarization) or textbooks (raw text, midpoint split)",
    )


def _json(out: dict) -> str:
    """``out`` as JSON, which has no NaN or Infinity: a score that is not finite is an error saying so."""
    try:
        return json.dumps(out, indent=2, default=str, allow_nan=False)
    except ValueError:
        raise ValueError(
            f"a number to print is not finite (NaN or infinity): {out}. A perplexity overflows when the "
            "model's loss is huge: evaluate an earlier checkpoint, or train again with a lower learning rate"
        ) from None


def _setup(args, tok=None):
    """Tokenizer (unless given), budget section and encoded data for ``--data`` at ``--budget``."""
    from course.budgets import get_budget
    from course.experiments import exp1_settings, rawtext_data, samsum_data
    from reftx_lib.data.tokenizer import load_tokenizer

    settings = get_budget(args.budget)
    tok = tok or load_tokenizer(settings["data"]["vocab_size"])
    if args.data == "samsum":
        cfg = settings["samsum"]
        data, stats = samsum_data(cfg, tok)
    else:
        cfg = exp1_settings(settings)  # raw text as the course trains it (Exp 1)
        data, stats = rawtext_data(cfg, tok, "midpoint" if args.model == "encdec" else "documents")
    return tok, cfg, data, stats


def cmd_prepare(args) -> int:
    from course.data_stats import corpus_stats, tokenizer_info
    from reftx_lib.data.corpora import load_corpus

    args.model = "encdec"
    tok, _, _, stats = _setup(args)
    out = {"tokenizer": tokenizer_info(tok), "preprocessing": stats}
    print(_json({**out, "corpus": corpus_stats(load_corpus(args.data), tok)}))
    return 0


def cmd_train(args) -> int:
    from course.experiments import build_model, train_config
    from reftx_lib.train.checkpoint import load_checkpoint
    from reftx_lib.train.trainer import fit, init_distributed, train

    init_distributed()  # a no-op unless started by torchrun --nproc_per_node N
    tok, cfg, data, _ = _setup(args)
    model = build_model(args.model, args.size or cfg["model"], len(tok), dropout=cfg.get("dropout", 0.1))
    config = train_config(
        cfg,
        name=f"cli-{args.data}-{args.model}",
        budget=args.budget,
        data=args.data,
        tokenizer=tok,
        device=args.device,
        compile=args.compile,
    )
    if args.out:
        config.checkpoint_dir = args.out
    config.overwrite = args.overwrite
    history = (
        train(model, data["train"], data["validation"], config, resume=args.resume)
        if args.resume
        else fit(model, data["train"], data["validation"], config)
    )
    last = load_checkpoint(os.path.join(config.checkpoint_dir, "last.pt"))["path"]  # named only if it loads
    print(f"best validation loss {history.best_val_loss():.4f}; checkpoint in {last}")
    return 0


def _trained(path: str):
    """The model of checkpoint ``path`` and the tokenizer it was trained with, read from its cached folder."""
    from reftx_lib.data.tokenizer import cached_tokenizer, load_tokenizer
    from reftx_lib.train.checkpoint import load_checkpoint, model_from

    ckpt = load_checkpoint(path)
    model = model_from(ckpt)
    key = (ckpt.get("tokenizer") or {}).get("key")
    return model, cached_tokenizer(key) if key else load_tokenizer(model.config.vocab_size)


def cmd_evaluate(args) -> int:
    from reftx_lib.train.evaluation import compute_rouge, generate_summaries, perplexity

    model, tok = _trained(args.checkpoint)
    args.model = "encdec" if model.is_encoder_decoder else "deconly"
    tok, cfg, data, _ = _setup(args, tok)
    test = (
        data["test"] if args.limit is None else data["test"].select(range(min(args.limit, len(data["test"]))))
    )
    out = {
        "perplexity": perplexity(model, test, second_half_only=args.data == "textbooks", device=args.device)
    }
    if args.data == "samsum" and args.model == "encdec":
        preds = generate_summaries(
            model,
            test,
            tok,
            num_beams=cfg["num_beams"],
            max_new_tokens=cfg["max_new_tokens"],
            device=args.device,
        )
        out["rouge"] = compute_rouge(preds, test["summary"])
    print(_json(out))
    return 0


def cmd_generate(args) -> int:
    import torch

    from reftx_lib.train.device import resolve_device

    if not args.text.strip():
        raise ValueError("--text is empty: give a prompt (decoder-only) or a dialogue (encoder-decoder)")
    device = resolve_device(args.device)
    model, tok = _trained(args.checkpoint)
    model.to(device).eval()
    ids = torch.tensor([tok.encode(args.text)], device=device)
    sampling = args.temperature != 0
    new = model.generate(
        ids,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=sampling,
        temperature=args.temperature if sampling else 1.0,
        top_p=args.top_p,
    )
    print(tok.decode(new[0].tolist(), skip_special_tokens=True))
    return 0


def cmd_run(args) -> int:
    from course.runner import report, run_course

    return report(run_course(args.budget, args.only, update_notebooks=args.update_notebooks))


def cmd_results(args) -> int:
    from course.results import readme_table, update_readme

    if args.update_readme:
        print("README.md updated" if update_readme() else "README.md already up to date")
    else:
        print(readme_table())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="load a corpus, build the tokenizer, print statistics")
    _common(p), _data(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model at a budget (resumes from --out when possible)")
    _common(p), _data(p)
    p.add_argument("--model", choices=("encdec", "deconly"), default="encdec")
    p.add_argument(
        "--size",
        choices=("nano", "mini", "tiny", "small", "medium", "large"),
        help="model size (default: the budget's)",
    )
    p.add_argument("--out", help="checkpoint folder (default: checkpoints/<budget>/cli-<data>-<model>)")
    p.add_argument("--resume", help="checkpoint file to resume from")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint of another run in the checkpoint folder (refused by default)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the forward pass and loss (GPU speed)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="perplexity (and ROUGE on SAMSum) of a checkpoint on the test split")
    _common(p), _data(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=_positive_int, help="only the first N test examples (N >= 1)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "generate", help="continue a prompt (decoder-only) or summarize a source (encoder-decoder)"
    )
    _common(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument(
        "--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples at this temperature"
    )
    p.add_argument(
        "--top-p", type=float, help="when sampling: keep the smallest token set with this much mass"
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("run", help="execute the course notebooks with papermill")
    _common(p)
    p.add_argument("--only", nargs="+", help="notebook numbers or names, e.g. 00 03")
    p.add_argument(
        "--update-notebooks",
        action="store_true",
        help="copy successfully executed notebooks (with outputs) back into notebooks/",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sweep",
        help="learning per CPU-minute: lr, batch tokens, context and vocabulary at equal time",
        add_help=False,
    )
    p.set_defaults(func=None)

    p = sub.add_parser("results", help="print the results table, or regenerate it in README.md")
    p.add_argument("--update-readme", action="store_true")
    p.set_defaults(func=cmd_results)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:  # so does the sweep
        from course.sweep import main as sweep_main

        return sweep_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, FloatingPointError) as exc:  # OSError: a missing file, a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
