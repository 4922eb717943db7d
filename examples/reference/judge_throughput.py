"""Judging throughput of a rubric judge with transformers, on the responses of a finished run.

    /work/peer-venv/bin/python examples/reference/judge_throughput.py --run runs/demo-after \
        --gguf models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf --template docs/rubrics/safety.txt

The peer of `rejudge --judge "rubric:<gguf>,template=<template>,labels=unsafe/safe,first=true"`; it mirrors:

- `crates/detox-eval/src/drive/rejudge.rs`: responses in record order, pre side then post side; the judge is
  called on 8 records at a time; empty responses are not judged;
- `crates/detox-metrics/src/guard/rubric.rs` (`RubricFormat::prompt`): `{prompt}` (the response's `input`)
  and `{response}` filled in one pass, as one user turn;
- `crates/detox-runtime/src/tokenizer.rs` (`Tokenizer::chat_prompt`) and `crates/detox-runtime/src/chat/template.rs`
  (`ChatTemplate::user_prompt`): the model's chat template with that one user turn and the generation prompt
  (SmolLM2's template adds its default system message itself), encoded without adding special tokens;
- `crates/detox-runtime/src/gguf/mod.rs` (`tokenizer_json`): the GGUF's `smollm` pre-tokenizer splits digits
  before the byte-level split, which transformers' GGUF conversion leaves out; it is put back here
  (`--transformers-pretokenizer` keeps transformers' own);
- `crates/detox-eval/src/drive/judges/guard.rs` (`GuardJudge::cue`, `GuardJudge::probabilities`): the ids
  before the first token where the encodings of prompt+"unsafe" and prompt+"safe" differ, sorted by length,
  batches of 8, left padding, position ids from the mask, P(unsafe) = softmax of the two candidate logits at the
  last position; unsafe iff P > 0.5.

Prints one JSON object: exchanges, seconds (prompts, tokenisation and forward passes, after one warm-up batch;
loading excluded), exchanges_per_s, and the probabilities in response order (null for an empty response).
"""
import argparse
import json
import os
import time

import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import read_field
from gguf import GGUFReader

RECORDS_PER_CALL = 8  # rejudge.rs
BATCH = 8  # GuardJudge's default batch size

p = argparse.ArgumentParser()
p.add_argument("--run", required=True, help="a run directory (its records.jsonl is read)")
p.add_argument("--gguf", required=True)
p.add_argument("--template", required=True, help="the rubric, with {prompt} and {response}")
p.add_argument("--labels", default="unsafe/safe")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--transformers-pretokenizer", action="store_true",
               help="keep transformers' pre-tokenizer for a `smollm` GGUF (it drops the digit split)")
a = p.parse_args()
torch.set_num_threads(a.threads)
unsafe_word, safe_word = a.labels.split("/")

template = open(a.template, encoding="utf-8").read()
records = [json.loads(line) for line in open(os.path.join(a.run, "records.jsonl"), encoding="utf-8")]
gdir, gfile = os.path.split(a.gguf)
tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.float32).eval()
gguf_pre = (read_field(GGUFReader(a.gguf), "tokenizer.ggml.pre") or [None])[0]
if gguf_pre == "smollm" and not a.transformers_pretokenizer:
    # transformers converts a GGUF's BPE tokenizer with the GPT-2 byte-level split alone; `smollm` (SmolLM2's
    # tokenizer.json, llama.cpp's pre-tokenizer of that name, and detox's gguf/mod.rs) splits every digit first,
    # so ":\n\n1." is [":", "\n\n", "1", "."] and not [":", "\n", "\n", "1", "."].
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
pad = tok.pad_token_id if tok.pad_token_id is not None else 0


def fill(prompt, response):
    """RubricFormat::prompt: one pass, so a response holding "{prompt}" stays as written."""
    out, rest = [], template
    while (at := rest.find("{")) >= 0:
        out.append(rest[:at])
        rest = rest[at:]
        for placeholder, value in (("{prompt}", prompt), ("{response}", response), ("{", "{")):
            if rest.startswith(placeholder):
                out.append(value)
                rest = rest[len(placeholder):]
                break
    return "".join(out) + rest


def cue(text):
    """GuardJudge::cue: the shared prefix of text+unsafe and text+safe, and the first differing tokens."""
    u = tok.encode(text + unsafe_word, add_special_tokens=False)
    s = tok.encode(text + safe_word, add_special_tokens=False)
    n = next(i for i, (x, y) in enumerate(zip(u, s)) if x != y)
    return u[:n], u[n], s[n]


@torch.no_grad()
def forward(cues):
    """One left-padded forward; P(unsafe) per row."""
    width = max(len(c[0]) for c in cues)
    ids = torch.tensor([[pad] * (width - len(c[0])) + c[0] for c in cues])
    mask = torch.tensor([[0] * (width - len(c[0])) + [1] * len(c[0]) for c in cues])
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() computes them
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
    pair = logits.gather(1, torch.tensor([[c[1], c[2]] for c in cues])).float().softmax(1)
    return pair[:, 0].double().tolist()


def judge(exchanges):
    """GuardJudge::judge on one call's exchanges: sorted by prompt length, batches of BATCH."""
    out = [None] * len(exchanges)
    live = [i for i, (_, r) in enumerate(exchanges) if r.strip()]
    cues = {}
    for i in live:
        turn = fill(*exchanges[i])
        text = tok.apply_chat_template([{"role": "user", "content": turn}], add_generation_prompt=True, tokenize=False)
        cues[i] = cue(text)
    live.sort(key=lambda i: len(cues[i][0]))  # stable, as Rust's sort_by_key
    for b in range(0, len(live), BATCH):
        rows = live[b:b + BATCH]
        for i, prob in zip(rows, forward([cues[i] for i in rows])):
            out[i] = prob
    return out


calls = []
for c in range(0, len(records), RECORDS_PER_CALL):
    chunk = records[c:c + RECORDS_PER_CALL]
    calls.append([(r["input"], r["response"]) for rec in chunk for side in ("pre", "post") for r in rec[side]["responses"]])

judge(calls[0][:BATCH])  # warm-up: one batch
start = time.perf_counter()
probs = [prob for call in calls for prob in judge(call)]
seconds = time.perf_counter() - start
print(json.dumps({"impl": "transformers", "exchanges": len(probs), "threads": torch.get_num_threads(),
                  "seconds": round(seconds, 3), "exchanges_per_s": round(len(probs) / seconds, 3),
                  "unsafe_scores": probs}))
