"""The Python peer of the `bench` example: transformers on the same model, inputs, threads and device.

    python3 examples/bench/hf_peer.py --model runs/smollm2-hf --inputs runs/bench_inputs.json [--device cpu]

Prints one JSON line per figure, as the Rust example does. The edit mirrors the reference's DINM step: forward
and backward of the edit input (NLL of the target), the constraint forward under no_grad, one Adam step on the
edited down_proj.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--inputs", required=True)
p.add_argument("--device", default="cpu")
a = p.parse_args()
inp = json.load(open(a.inputs))
dev = torch.device(a.device)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def emit(what, ms):
    print(json.dumps({"impl": "transformers", "what": what, "ms": round(ms, 3), "threads": torch.get_num_threads(),
                      "device": a.device}), flush=True)


model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).to(dev).eval()
for prm in model.parameters():
    prm.requires_grad_(False)
reps = inp["reps"]

ids = torch.tensor([inp["prompt_ids"]], device=dev)
times = []
with torch.no_grad():
    for _ in range(reps + 1):
        sync(); t = time.perf_counter()
        model(ids, logits_to_keep=1)
        sync(); times.append((time.perf_counter() - t) * 1e3)
emit(f"prefill_{len(inp['prompt_ids'])}_tokens", statistics.median(times[1:]))

prompts = torch.tensor(inp["decode_prompts"], device=dev)
mask = torch.ones_like(prompts)
new = inp["new"]
times = []
with torch.no_grad():
    for _ in range(reps + 1):
        sync(); t = time.perf_counter()
        model.generate(prompts, attention_mask=mask, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=0)
        sync(); pre = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(prompts, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       pad_token_id=0, eos_token_id=None)
        sync(); times.append(((time.perf_counter() - t) - pre) * 1e3 / (new - 1))
emit(f"decode_step_batch_{len(inp['decode_prompts'])}", statistics.median(times[1:]))

e = inp["edit"]
name = f"model.layers.{e['layer']}.mlp.down_proj.weight"
weight = dict(model.named_parameters())[name]
original = weight.detach().clone()
edit_ids = torch.tensor([e["input"]], device=dev)
labels = torch.tensor([e["target"]], device=dev)
kc = torch.tensor([e["constraint"]], device=dev)
n = e["answer_len"]
times = []
for _ in range(3):
    weight.requires_grad_(True)
    opt = torch.optim.Adam([weight], lr=e["lr"])
    sync(); t = time.perf_counter()
    with torch.no_grad():
        base = model(kc).logits[:, -n:].float()
    for _ in range(e["steps"]):
        opt.zero_grad()
        logits = model(edit_ids).logits.float()
        pred = logits[:, :-1][:, -labels.shape[1]:]
        nll = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), labels.reshape(-1))
        with torch.no_grad():
            post = model(kc).logits[:, -n:].float()
        kl = (base.softmax(-1) * (base.log_softmax(-1) - post.log_softmax(-1))).sum(-1).mean()
        loss = e["kl_factor"] * nll + kl
        loss.backward()
        opt.step()
    sync(); times.append((time.perf_counter() - t) * 1e3)
    with torch.no_grad():
        weight.copy_(original)
emit(f"dinm_edit_10_steps_{len(e['input'])}_tokens", statistics.median(times))
