"""Exp 1 measurement tools: training-step memory in a spawned process, repetition and distinct-n proxies.

Models here are tiny (d_model 32, 1 layer, vocab 64) so the subprocess starts and finishes in seconds.
"""

import math

import pytest
import torch

from course.evaluation import distinct_n, repetition_rate
from course.memory import training_memory_mb
from reftx_lib import ModelConfig

TINY = ModelConfig(
    vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, max_len=64
).to_dict()


def test_training_memory_is_positive_for_the_encoder_decoder():
    doc = list(range(4, 36))  # 32 tokens
    packed = [doc[:16] + [3] + doc[16:] + [2]] * 4  # source [SEP] target [EOS]
    mem = training_memory_mb("ReferenceTransformer", TINY, packed, steps=2)
    assert 0 < mem < 500  # MiB: a 30k-parameter model on 4 rows needs far less


def test_training_memory_is_positive_and_grows_with_the_batch():
    small = training_memory_mb("ReferenceDecoderOnly", TINY, [[1] + list(range(4, 20)) + [2]], steps=1)
    # vocab 4096 and 64 rows of 60 tokens: the logits would be 64 * 60 * 4096 * 4 bytes = 60 MiB, but the
    # step measured is the trainer's, whose fused CPU loss never builds them (reftx_lib.train.loss); the rest
    # grows too
    big = training_memory_mb(
        "ReferenceDecoderOnly", {**TINY, "vocab_size": 4096}, [[1] + list(range(4, 62)) + [2]] * 64, steps=1
    )
    assert 0 < small < 500
    assert big > small + 10


def test_training_memory_rejects_unknown_class():
    with pytest.raises(ValueError, match="unknown model class"):
        training_memory_mb("GPT5", TINY, [[1, 4, 5, 2]], steps=1)


def test_repetition_rate_on_known_strings():
    assert repetition_rate("the cat sat on the mat today", n=4) == 0.0
    # 9 words -> 6 four-grams: "a b c a", "b c a b", "c a b c" are new, the next three repeat them
    assert repetition_rate("a b c a b c a b c", n=4) == pytest.approx(3 / 6)
    assert repetition_rate("x x x x x x", n=4) == pytest.approx(2 / 3)  # 3 four-grams, all "x x x x"
    # pooled over texts, and a repeat must be within the same text
    assert repetition_rate(["a b c d", "a b c d"], n=4) == 0.0
    assert repetition_rate(["a b c d a b c d", "p q r s"], n=4) == pytest.approx(1 / 6)
    assert math.isnan(repetition_rate(["too short"], n=4))


def test_repetition_rate_on_token_ids():
    assert repetition_rate([[5, 6, 5, 6, 5, 6]], n=2) == pytest.approx(3 / 5)
    assert repetition_rate([[1, 2, 3, 4, 5]], n=2) == 0.0


def test_distinct_n():
    assert distinct_n("a b c d", n=2) == 1.0
    assert distinct_n("a a a a a", n=1) == pytest.approx(1 / 5)
    assert distinct_n(["a b", "a b"], n=2) == pytest.approx(1 / 2)  # pooled across texts
    assert math.isnan(distinct_n(["a"], n=2))
    with pytest.raises(ValueError):
        distinct_n("a b", n=0)


@pytest.mark.parametrize("size", ["nano", "tiny", "small"])
def test_matched_d_ff_gives_the_decoder_only_model_the_encoder_decoders_parameters(size):
    """Exp 1's parameter-matched arm: within half a d_ff unit's parameters of the encoder-decoder."""
    from course.accounting import num_parameters
    from course.experiments import matched_d_ff
    from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer

    def total(cls, **overrides):
        with torch.device("meta"):
            return num_parameters(cls.from_size(size, vocab_size=512, **overrides))["total"]

    d_ff = matched_d_ff(size, 512)
    per_unit = total(ReferenceDecoderOnly, d_ff=d_ff + 1) - total(ReferenceDecoderOnly, d_ff=d_ff)
    assert abs(total(ReferenceDecoderOnly, d_ff=d_ff) - total(ReferenceTransformer)) <= per_unit / 2


def test_exp1_settings_are_the_samsum_baselines_optimisation_with_the_raw_text_budget():
    """Exp 1, Exp 2 and Exp 3's SAMSum control share one recipe: they differ only in architecture or data."""
    from course.budgets import BUDGET_CHOICES, get_budget
    from course.experiments import exp1_settings, exp2_settings, exp3_settings

    for name in BUDGET_CHOICES:
        settings = get_budget(name)
        hp, pre, ctl = exp1_settings(settings), exp2_settings(settings), exp3_settings(settings)
        for key in ("dropout", "lr", "warmup_steps"):
            assert hp[key] == pre[key] == ctl[key] == settings["samsum"][key], (name, key)
        for key in ("model", "max_steps", "eval_every", "batch_tokens"):
            assert hp[key] == pre[key] == ctl[key] == settings["rawtext"][key], (name, key)
        for key in ("max_doc_tokens", "n_train_docs"):
            assert hp[key] == pre[key] == settings["rawtext"][key], (name, key)
        assert ctl["max_source_len"] == settings["samsum"]["max_source_len"], name


def test_train_config_has_no_hidden_defaults():
    """A section without its optimisation settings is an error naming them, not a run on fallback values."""
    from course.experiments import train_config

    with pytest.raises(ValueError, match=r"lacks \['lr', 'warmup_steps', 'eval_every'\].*budgets.py"):
        train_config(
            {"max_steps": 10, "batch_tokens": 64}, name="x", budget="smoke", data="d", tokenizer=None
        )


@pytest.mark.parametrize("name", ["smoke", "cpu", "full", "gpu"])
def test_a_dry_run_keeps_the_budgets_shapes_and_cuts_its_counts(name):
    """``gpu-dry`` is the gpu budget's models and lengths for two steps, at batches a CPU can hold: what a
    first run needs."""
    from course.budgets import DRY_RUN, DRY_RUN_MAX_BATCH_TOKENS, get_budget
    from course.experiments import train_config

    full, dry = get_budget(name), get_budget(f"{name}-dry")
    for section, settings in full.items():
        for key, value in settings.items():
            if key == "batch_tokens":
                expected = min(value, DRY_RUN_MAX_BATCH_TOKENS)
            else:
                expected = DRY_RUN[key] if key in DRY_RUN else value
            assert dry[section][key] == expected, (section, key)
    for section in ("samsum", "rawtext", "scaling"):  # every section a TrainConfig is made from
        cfg = {**dry["samsum"], **dry[section]}  # as the notebooks merge them
        config = train_config(cfg, name="x", budget=f"{name}-dry", data="d", tokenizer=_Tok())
        assert config.max_steps == 2 and config.warmup_steps <= config.max_steps
    with pytest.raises(ValueError, match="unknown course budget 'gpu-wet'"):
        get_budget("gpu-wet")


class _Tok:
    """Just enough of a tokenizer for ``tokenizer_info``."""

    name_or_path = "test"
    vocab_size = 64

    def __len__(self):
        return 64


def test_a_prediction_holds_only_when_every_seed_agrees():
    from course.verdicts import ONE_SEED, prediction_table, range_verdict

    assert range_verdict([2.1, 2.5], 2.0, 3.0) == "holds"
    assert range_verdict([1.1, 1.9], 2.0, 3.0) == "fails"
    assert range_verdict([1.9, 2.1], 2.0, 3.0) == "cannot decide: seeds disagree"
    predictions = {"ppl": ("perplexity", (2.0, 3.0)), "params": ("parameters", (0.9, 1.1))}
    table = prediction_table(predictions, {"ppl": 1.95, "params": 1.37}, {"ppl": [1.99, 1.92]})
    assert list(table["verdict"]) == ["fails", "fails"]
    assert list(table["seed range"]) == ["1.92–1.99", "one value"]
    assert list(table["direction (enc-dec worse/slower/bigger)"]) == ["yes", "yes"]
    single = prediction_table(predictions, {"ppl": 2.5, "params": 1.0}, {"ppl": [2.5]})
    assert list(single["verdict"]) == ["holds" + ONE_SEED, "holds"]  # params is one value by nature


def test_continuations_batch_prompts_by_length_and_keep_their_order():
    from course.evaluation import continuation_quality, continue_texts
    from reftx_lib import ReferenceDecoderOnly

    class Ids:  # a tokenizer stand-in: token ids as words
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(str(i) for i in ids)

    torch.manual_seed(0)
    model = ReferenceDecoderOnly(**{**ModelConfig.from_dict(TINY).to_dict()})
    prompts = [[1, 5, 6], [1, 7], [1, 8, 9]]
    texts = continue_texts(model, prompts, Ids(), max_new_tokens=4)
    for prompt, text in zip(prompts, texts):  # each equals the prompt's own greedy continuation
        alone = model.generate(torch.tensor([prompt]), max_new_tokens=4)[0].tolist()
        assert text == " ".join(str(i) for i in alone)
    quality = continuation_quality(["a b c d a b c d", "e f"])
    assert quality["words per continuation"] == 5 and 0 < quality["repetition rate (4-grams)"] < 1


class _Vocab:
    """A stand-in tokenizer: the course functions below read only its size and name."""

    name_or_path = ""

    def __len__(self) -> int:
        return 8192


@pytest.mark.parametrize("name", ["smoke", "cpu", "full", "gpu"])
def test_exp3_control_is_exp1s_recipe_on_samsum_in_its_own_folder(monkeypatch, name):
    """Exp 3's control differs from Exp 1's encoder-decoder only in its data: its own checkpoint, never
    the SAMSum baseline's (which trains by epochs after a reading warm-up), and Exp 1's model size."""
    from course import experiments
    from course.budgets import get_budget

    monkeypatch.setattr(experiments, "samsum_data", lambda cfg, tok: ({}, {}))
    with torch.device("meta"):  # builds the models without their weights
        control = experiments.exp3_samsum_model(name, get_budget(name), _Vocab())
    folder = control.config.checkpoint_dir.replace("\\", "/").rsplit("/", 1)[-1]
    assert folder == "exp3-samsum-matched"
    assert control.config.batch_tokens == experiments.exp1_settings(get_budget(name))["batch_tokens"]
    assert (
        control.model.config.to_dict()
        == experiments.build_model(
            "encdec", experiments.exp1_settings(get_budget(name))["model"], 8192, dropout=0.1
        ).config.to_dict()
    )


def test_exp1_arms_follow_the_budget_and_refuse_to_drop_an_arm_a_verdict_needs():
    from course.budgets import get_budget
    from course.experiments import EXP1_ARMS, exp1_arms

    assert list(exp1_arms(get_budget("cpu"))) == list(EXP1_ARMS)
    assert "deconly_matched" not in exp1_arms(get_budget("full"))
    with pytest.raises(ValueError, match=r"lack \['prefix_lm'\].*budgets.py"):
        exp1_arms({"rawtext": {"arms": ["encdec", "deconly"]}})
    with pytest.raises(ValueError, match=r"unknown arms \['gpt'\]"):
        exp1_arms({"rawtext": {"arms": ["encdec", "deconly", "prefix_lm", "gpt"]}})


def test_an_exp1_run_on_fewer_documents_is_another_run(monkeypatch):
    """The raw-text document subset is part of a run's identity: a budget that trains on fewer documents
    never resumes, or reads as its own, a checkpoint written on the whole corpus."""
    from course import experiments
    from course.budgets import get_budget
    from reftx_lib.train.checkpoint import identity_of

    monkeypatch.setattr(experiments, "rawtext_data", lambda cfg, tok, layout: ({}, {}))
    whole = get_budget("full")
    whole["rawtext"]["n_train_docs"] = None
    half = get_budget("full")
    half["rawtext"]["n_train_docs"] = 2535
    with torch.device("meta"):  # builds the models without their weights
        runs = [experiments.exp1_model("encdec", "full", p, _Vocab()) for p in (whole, half)]
    assert runs[0].config.checkpoint_dir == runs[1].config.checkpoint_dir
    assert identity_of(runs[0].model, runs[0].config) != identity_of(runs[1].model, runs[1].config)
