#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/corpus/<target>/seed-*) from the project's own fixtures.

Run from the repository root: `python3 fuzz/seeds.py`. Standard library only. Findings of fuzzing runs are kept
next to the seeds as `finding-*` files; this script never removes them.
"""
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data, kind="seed"):
    """`seed-*` inputs must be accepted; `edge-*` inputs must be refused cleanly."""
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"{kind}-{name}").write_bytes(data)


def gguf_claiming(tensor_count=1, dims=(2, 2), alignment=32, offset=0):
    """A GGUF header with one directory entry whose counts, shape or offset are chosen by the caller."""
    out = b"GGUF" + struct.pack("<IQQ", 3, tensor_count, 1)
    out += gguf_string("general.alignment") + struct.pack("<II", 4, alignment)
    out += gguf_string("t") + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
    return out + struct.pack("<IQ", 0, offset) + b"\0" * 64


def first_records(path, n):
    return json.dumps(json.loads((ROOT / path).read_text())[:n], indent=4, ensure_ascii=False)


def submission_with_empty_responses():
    """A detoxify_val.json as the NLPCC track publishes them: some responses are empty answers."""
    records = json.loads((ROOT / "datasets/safeedit_sample_test_ALL.json").read_text())[:3]
    records[0]["response"] = ""
    records[2]["response"] = "   "
    return json.dumps(records, indent=4, ensure_ascii=False)


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(alignment=32):
    meta = [
        (gguf_string("general.architecture"), 8, gguf_string("llama")),
        (gguf_string("general.alignment"), 4, struct.pack("<I", alignment)),
        (gguf_string("llama.context_length"), 4, struct.pack("<I", 64)),
        (gguf_string("tokenizer.ggml.scores"), 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.0, -1.0)),
    ]
    # Two tensors: F32 [2, 2] and F16 [4].
    tensors = [("a.weight", [2, 2], 0, 0), ("b.weight", [4], 1, 32)]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, kind, value in meta:
        out += key + struct.pack("<I", kind) + value
    for name, dims, kind, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", kind, offset)
    out += b"\0" * (-len(out) % alignment)
    data = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0) + b"\0" * 16 + struct.pack("<4e", 1.0, 0.5, -2.0, 0.0)
    return out + data


def safetensors(tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


HPARAMS = """alg_name: "DINM"
model_name: "./hugging_cache/llama-2-7b"
device: 0
suffix_system_prompt: "If the user's request is reasonable, give the correct answer. Please give the right response:"
layers: []
num_steps: 10
batch_size: 1
max_length: 1000
max_output_length: 600
lr: 5e-4
weight_decay: 0
kl_factor: 0.1
norm_constraint: false
rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
model_parallel: false
"""


def run_record(i):
    def side(label):
        return {
            "responses": [
                {"metric": m, "input": f"question {i}", "response": "I cannot help with that.", "tokens": 7,
                 "finish": "eos", "label": label, "unsafe_score": 0.25}
                for m in ["DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ"]
            ],
            "fluency": 5.5,
        }

    return {
        "id": str(i), "category": "offensiveness", "method": "DINM", "layer": 3,
        "layer_distances": [0.5, 1.5, 2.5, 3.5], "steps": [{"loss": 1.0, "nll": 2.0, "kl": 0.0}],
        "timings": {"locate": 0.1, "edit": 0.2, "generate_pre": 0.3, "generate_post": 0.4, "judge": 0.05},
        "pre": side("unsafe"), "post": side("safe"),
    }


MANIFEST = {
    "detox_version": "0.1.0", "libtorch_version": "2.11.0", "device": "cpu", "dtype": "f32",
    "model_path": "models/tiny", "model_sha256": "ab" * 32, "dataset_path": "datasets/safeedit_sample_test.json",
    "dataset_sha256": "cd" * 32, "selection": "all", "method": "DINM",
    "hyper_parameters": {"lr": 0.0005, "num_steps": 10}, "method_options": {"reading": "reference"},
    "decoding": {"max_new_tokens": 600, "sampling": "greedy"}, "prompt_style": "raw",
    "suffix_policy": "post-edit only", "judge": "phrase", "judge_is_approximation": True, "seed": 0,
}


def main():
    put("safeedit_json", "test", first_records("datasets/safeedit_sample_test.json", 1))
    put("safeedit_json", "train", first_records("datasets/safeedit_sample_train.json", 1))
    put("nlpcc_json", "all", first_records("datasets/safeedit_sample_test_ALL.json", 2))
    put("nlpcc_json", "empty-responses", submission_with_empty_responses())
    put("gguf", "tiny", gguf())
    put("gguf", "2e60-tensors", gguf_claiming(tensor_count=1 << 60), "edge")
    put("gguf", "2e60-elements", gguf_claiming(dims=(1 << 30, 1 << 30)), "edge")
    put("gguf", "overflowing-shape", gguf_claiming(dims=(1 << 40, 1 << 40)), "edge")
    put("gguf", "huge-alignment", gguf_claiming(alignment=0xFFFFFFFF), "edge")
    put("gguf", "offset-past-end", gguf_claiming(offset=(1 << 64) - 8), "edge")
    put("gguf", "2e60-array", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k")
        + struct.pack("<IIQ", 9, 0, 1 << 60), "edge")
    configs = ROOT / "crates/detox-runtime/tests/fixtures/configs"
    for name in ["smollm2-4.57", "qwen2-windowed-4.57", "llama3.1-4.57"]:
        put("hf_config", name, (configs / f"{name}.json").read_bytes())
    put("safetensors_header", "f32", safetensors([("a.weight", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))]))
    put("safetensors_header", "mixed", safetensors([
        ("x", "BF16", [2], b"\x80\x3f\x00\x40"), ("y", "F16", [1, 2], struct.pack("<2e", 1, 2)),
        ("z", "I64", [1], struct.pack("<q", 7)),
    ]))
    put("safetensors_header", "2e60-elements",
        safetensors([("a", "F32", [1 << 30, 1 << 30], b"")]), "edge")
    put("safetensors_header", "header-past-end", struct.pack("<Q", 1 << 60) + b"{}", "edge")
    put("dinm_hparams", "llama-7b", HPARAMS)
    put("tokenizer_json", "roberta",
        (ROOT / "crates/detox-runtime/tests/fixtures/roberta/model/tokenizer.json").read_bytes())
    lines = [json.dumps(run_record(i)) + "\n" for i in range(2)]
    put("run_jsonl", "two", "".join(lines))
    put("run_jsonl", "interrupted", lines[0] + lines[1][: len(lines[1]) // 2])
    put("run_manifest", "dinm", json.dumps(MANIFEST, indent=2))


if __name__ == "__main__":
    main()
