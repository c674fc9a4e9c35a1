"""Greedy, sampling and beam-search decoding for both models. With ``use_cache=True`` each step feeds only
the newest token and reuses cached keys and values; ``use_cache=False`` recomputes the whole sequence,
slow but the reference the cache is tested against."""

from __future__ import annotations

import math

import torch
from transformers import NoRepeatNGramLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from .layers import prefix_lm_mask
from .packing import check_ids


def _start(model, input_ids: torch.Tensor, use_cache: bool) -> tuple[dict, torch.Tensor]:
    """The decoding state and the first tokens to feed: BOS after the encoded source, or the prompt."""
    if not all(p.isfinite().all() for p in model.parameters()):  # NaN weights decode to "" or fail to sample
        raise FloatingPointError("weights hold NaN or inf, as a diverged run's do: load a good checkpoint")
    c = model.config
    state = {"seq": input_ids[:, :0], "caches": [{} for _ in range(c.n_layers)] if use_cache else None}
    if model.is_encoder_decoder:
        check_ids(input_ids, c, "source (input_ids)")
        state["memory"], state["memory_mask"], _ = model.encode(input_ids)
        return state, torch.full_like(input_ids[:, :1], c.bos_token_id)
    check_ids(input_ids, c)
    if (input_ids == c.pad_token_id).any():
        raise ValueError(
            "decoder-only prompts must not contain padding: give equal-length prompts "
            "or generate one prompt at a time"
        )
    if c.prefix_lm:  # the whole prompt is the prefix: read both ways once, then every new token causally
        state["prefix"] = input_ids.size(1)
    return state, input_ids


def _next_logits(model, state: dict, new: torch.Tensor) -> torch.Tensor:
    """Append ``new`` (B, n) to the sequence and return the logits (B, V) for what follows."""
    past, state["seq"] = state["seq"].size(1), torch.cat([state["seq"], new], dim=1)
    if state["seq"].size(1) > model.config.max_len:
        raise ValueError(
            f"generation would exceed max_len={model.config.max_len}: "
            "lower max_new_tokens or shorten the prompt"
        )
    ids, offset = (state["seq"], 0) if state["caches"] is None else (new, past)
    if model.is_encoder_decoder:
        hidden = model.decode(ids, state["memory"], state["memory_mask"], state["caches"], offset)[0]
    else:
        mask = None  # the prompt gets its prefix mask once; later tokens see every cached key (causal)
        if "prefix" in state and offset == 0:  # a (B,) prefix length per row
            mask = prefix_lm_mask(torch.full((ids.size(0),), state["prefix"], device=ids.device), ids.size(1))
        hidden = model.decode(ids, mask, state["caches"], offset)[0]
    return model.lm_head(hidden[:, -1])  # (B, V): only the last position needs the output head


def _reorder(state: dict, index: torch.Tensor) -> None:
    """Follow the surviving beams: pick rows ``index`` of every per-row tensor, KV caches included."""
    state.update({key: value[index] for key, value in state.items() if torch.is_tensor(value)})
    for kv in (kv for cache in state["caches"] or [] for kv in cache.values()):
        kv.update({key: value[index] for key, value in kv.items() if torch.is_tensor(value)})


def _check_sampling(do_sample: bool, num_beams: int, temperature: float, top_k, top_p) -> None:
    """Sampling options that are out of range, or that the chosen decoding would silently ignore."""
    options = {"temperature": temperature != 1.0, "top_k": top_k is not None, "top_p": top_p is not None}
    if not do_sample and (ignored := [name for name, changed in options.items() if changed]):
        raise ValueError(
            f"{', '.join(ignored)} only act when sampling, and "
            f"{'beam search' if num_beams > 1 else 'greedy decoding'} would ignore them; "
            "pass do_sample=True (with num_beams=1) or leave them at their defaults"
        )
    finite = isinstance(temperature, (int, float)) and math.isfinite(temperature)
    if do_sample and not (finite and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature}; "
            "lower it towards 0 for sharper samples, or use do_sample=False for greedy decoding"
        )
    if do_sample and top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (keep the k most likely tokens), got {top_k!r}")
    if do_sample and top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (the probability mass kept), got {top_p!r}")


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int = 64,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens per row, stopping rows at EOS: the new tokens only, (B, <=
    max_new_tokens), padded after EOS. Beam search ranks finished hypotheses by ``sum log p / length **
    length_penalty``; ``no_repeat_ngram_size=n`` forbids repeating an n-gram, the usual cure for loops."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise ValueError(
            f"no_repeat_ngram_size must be an integer >= 0 (0: off), got {no_repeat_ngram_size!r}"
        )
    block = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size) if no_repeat_ngram_size else None
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if num_beams > 1 and do_sample:
        raise ValueError(
            "beam search is deterministic: use num_beams=1 with do_sample=True, or do_sample=False"
        )
    _check_sampling(do_sample, num_beams, temperature, top_k, top_p)
    # Hugging Face's filters set to -inf the logits outside the top k and outside the nucleus of mass top_p
    filters = [TopKLogitsWarper(top_k)] if top_k is not None else []
    filters += [TopPLogitsWarper(top_p)] if top_p is not None else []

    def pick(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> the next token of each row (B,)
        if not do_sample:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        for keep in filters:
            logits = keep(None, logits)  # (B, V); the filters ignore the ids
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)

    was_training = model.training
    model.eval()
    try:
        if num_beams > 1:
            return _beam_search(model, input_ids, max_new_tokens, num_beams, length_penalty, use_cache, block)
        return _sample(model, input_ids, max_new_tokens, use_cache, block, pick)
    finally:
        model.train(was_training)


def _sample(model, input_ids, max_new_tokens, use_cache, block, pick) -> torch.Tensor:
    pad, eos = model.config.pad_token_id, model.config.eos_token_id
    state, first = _start(model, input_ids, use_cache)
    logits = _next_logits(model, state, first)  # (B, V)
    finished, out = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device), []
    for _ in range(max_new_tokens):
        if block is not None and out:
            logits = block(torch.stack(out, dim=1), logits)  # (B, V): repeating n-grams at -inf
        token = pick(logits).masked_fill(finished, pad)  # (B,)
        out.append(token)
        finished |= token == eos
        if bool(finished.all()) or len(out) == max_new_tokens:
            break
        logits = _next_logits(model, state, token[:, None])
    return torch.stack(out, dim=1)


def _beam_search(model, input_ids, max_new_tokens, k, length_penalty, use_cache, block):
    pad, eos = model.config.pad_token_id, model.config.eos_token_id
    b, device = input_ids.size(0), input_ids.device
    state, first = _start(model, input_ids, use_cache)
    _reorder(state, torch.arange(b, device=device).repeat_interleave(k))  # (B*K) rows
    logits = _next_logits(model, state, first.repeat_interleave(k, dim=0))  # (B*K, V)
    scores = torch.tensor([0.0] + [float("-inf")] * (k - 1), device=device).repeat(b, 1)  # one live beam
    # per row at first: the K beams start identical, and K live copies would pick the same tokens
    seqs = torch.empty(b * k, 0, dtype=torch.long, device=device)
    finished, done = [[] for _ in range(b)], [False] * b  # per row: (score, sequence) hypotheses, done
    for step in range(1, max_new_tokens + 1):
        logp, vocab = logits.float().log_softmax(dim=-1), logits.size(-1)  # (B*K, V)
        if block is not None and seqs.size(1):
            logp = block(seqs, logp)  # repeating n-grams at -inf
        candidates = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, -1)  # (B, K*V)
        top_scores, top_idx = candidates.topk(2 * k, dim=1)  # (B, 2K): enough to refill K after EOS
        next_tokens = torch.full((b, k), pad, dtype=torch.long, device=device)
        next_scores, next_beams = torch.full_like(scores, float("-inf")), torch.zeros_like(next_tokens)
        for i in [i for i in range(b) if not done[i]]:
            filled = 0
            for score, idx in zip(top_scores[i].tolist(), top_idx[i].tolist()):
                if score == float("-inf") or filled == k:
                    break
                beam, token = divmod(idx, vocab)
                if token == eos:
                    seq = torch.cat([seqs[i * k + beam], torch.tensor([eos], device=device)])
                    finished[i].append((score / step**length_penalty, seq))
                else:
                    next_scores[i, filled], next_tokens[i, filled], next_beams[i, filled] = score, token, beam
                    filled += 1
            finished[i] = sorted(finished[i], key=lambda h: h[0], reverse=True)[:k]
            best_open = next_scores[i].max().item() / step**length_penalty
            done[i] = filled == 0 or (len(finished[i]) == k and finished[i][-1][0] >= best_open)
        index = (torch.arange(b, device=device)[:, None] * k + next_beams).flatten()  # (B*K,)
        seqs, scores = torch.cat([seqs[index], next_tokens.flatten()[:, None]], dim=1), next_scores
        if all(done) or step == max_new_tokens:
            break
        _reorder(state, index)
        logits = _next_logits(model, state, next_tokens.flatten()[:, None])
    # A row where no beam reached EOS within max_new_tokens takes its best open beam.
    best = [finished[i][0][1] if finished[i] else seqs[i * k + int(scores[i].argmax())] for i in range(b)]
    return torch.nn.utils.rnn.pad_sequence(best, batch_first=True, padding_value=pad)  # (B, <= max_new)
