"""Bad inputs, one per case: each writes its bad files under a test folder and gives the argv and
what the one-line error must name. `make(tmp, src)`: tmp is the test's folder, src a private copy of
the bundled model (tests/adversarial/conftest.py)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
EXPERT = "model.layers.1.mlp.experts.0.down_proj.weight"


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, Path], tuple[list, list[str]]]  # -> (argv, names the error line must hold)


def quantize(src: Path, tmp: Path, *extra: object) -> list:
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "out", *extra]


def _index(src: Path) -> dict:
    return json.loads((src / INDEX).read_text())


def _write_index(src: Path, index: object) -> None:
    (src / INDEX).write_text(json.dumps(index))


def _reshard(src: Path, old: str, new: str) -> None:
    index = _index(src)
    index["weight_map"] = {k: (new if v == old else v) for k, v in index["weight_map"].items()}
    _write_index(src, index)


def _first_tensor(src: Path, shard: str) -> str:
    return sorted(k for k, v in _index(src)["weight_map"].items() if v == shard)[0]


def on_source(mutate: Callable[[Path, Path], object], *names: str, extra: tuple = ()) -> Callable:
    """A case that spoils the source copy with `mutate(tmp, src)` and quantizes it; `names` are
    formatted with tmp and src ("{src}/config.json")."""

    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        mutate(tmp, src)
        return quantize(src, tmp, *extra), [n.format(tmp=tmp, src=src) for n in names]

    return make


def shard_named(bad: str) -> Callable[[Path, Path], None]:
    """Every tensor of the second shard placed in `bad` (a victim file waits at tmp/victim.safetensors)."""

    def mutate(tmp: Path, src: Path) -> None:
        (tmp / "victim.safetensors").write_bytes((src / SHARD_2).read_bytes())
        _reshard(src, SHARD_2, bad.format(tmp=tmp))

    return mutate


def write(name: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        path = src / name
        if path.is_dir():
            path.rmdir()
        path.unlink(missing_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return mutate


def make_directory(name: str) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        (src / name).unlink()
        (src / name).mkdir()

    return mutate


def remove(name: str) -> Callable[[Path, Path], None]:
    return lambda tmp, src: (src / name).unlink()


def edit_config(**changes: object) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        config = json.loads((src / "config.json").read_text()) | changes
        (src / "config.json").write_text(json.dumps(config))

    return mutate


def replace_tensor(name: str, value: Callable[[], object]) -> Callable[[Path, Path], None]:
    """Rewrite the shard holding `name` with that tensor replaced by `value()` (a torch tensor)."""

    def mutate(tmp: Path, src: Path) -> None:
        from safetensors.torch import load_file, save_file

        shard = src / _index(src)["weight_map"][name]
        tensors = load_file(shard)
        tensors[name] = value()
        save_file(tensors, shard, metadata={"format": "pt"})

    return mutate


def shard_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    return lambda tmp, src: (src / SHARD_1).write_bytes(transform((src / SHARD_1).read_bytes()))


def index_value(value: object) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        index = _index(src)
        index["weight_map"][_first_tensor(src, SHARD_1)] = value
        _write_index(src, index)

    return mutate


def ghost_tensor(tmp: Path, src: Path) -> None:
    index = _index(src)
    index["weight_map"]["model.layers.9.ghost.weight"] = SHARD_1
    _write_index(src, index)


def unindexed_tensor(tmp: Path, src: Path) -> None:
    index = _index(src)
    del index["weight_map"]["lm_head.weight"]
    _write_index(src, index)


IDX, CFG, SH1, SH2 = "{src}/" + INDEX, "{src}/config.json", "{src}/" + SHARD_1, "{src}/" + SHARD_2

QUANTIZE_SOURCE = [
    Case("index-dotdot-shard", on_source(shard_named("../victim.safetensors"), IDX, "weight_map.")),
    Case("index-absolute-shard", on_source(shard_named("{tmp}/victim.safetensors"), IDX, "weight_map.")),
    Case("index-parent-only", on_source(shard_named(".."), IDX, "weight_map.")),
    Case("index-dot", on_source(shard_named("."), IDX, "weight_map.")),
    Case("index-subfolder-shard", on_source(shard_named("sub/x.safetensors"), IDX, "weight_map.")),
    Case("index-backslash-shard", on_source(shard_named("..\\victim.safetensors"), IDX, "weight_map.")),
    Case("index-empty-shard-name", on_source(shard_named(""), IDX, "weight_map.")),
    Case("index-control-char-shard", on_source(shard_named("x\n.safetensors"), IDX, "weight_map.")),
    Case("index-number-shard", on_source(index_value(7), IDX, "weight_map.")),
    Case("index-null-shard", on_source(index_value(None), IDX, "weight_map.")),
    Case("index-list", on_source(write(INDEX, "[]"), IDX)),
    Case("index-not-json", on_source(write(INDEX, "{weight_map: "), IDX)),
    Case("index-no-weight-map", on_source(write(INDEX, '{"metadata": {}}'), IDX, "weight_map")),
    Case("index-empty-weight-map", on_source(write(INDEX, '{"weight_map": {}}'), IDX, "weight_map")),
    Case("index-weight-map-list", on_source(write(INDEX, '{"weight_map": ["a"]}'), IDX, "weight_map")),
    Case("index-not-utf8", on_source(write(INDEX, b"\xff\xfe{"), IDX)),
    Case("index-missing", on_source(remove(INDEX), IDX)),
    Case("index-directory", on_source(make_directory(INDEX), IDX)),
    Case("shard-missing", on_source(remove(SHARD_2), SH2)),
    Case("shard-truncated", on_source(shard_bytes(lambda data: data[: len(data) // 2]), SH1)),
    Case("shard-padded", on_source(shard_bytes(lambda data: data + b"\0" * 64), SH1)),
    Case("shard-garbage", on_source(shard_bytes(lambda data: b"not a safetensors file at all"), SH1)),
    Case("shard-header-too-long", on_source(shard_bytes(lambda data: struct.pack("<Q", 1 << 40) + data[8:]), SH1)),
    Case("shard-empty", on_source(shard_bytes(lambda data: b""), SH1)),
    Case("shard-directory", on_source(make_directory(SHARD_1), SH1)),
    Case("index-names-absent-tensor", on_source(ghost_tensor, "model.layers.9.ghost.weight")),
    Case("shard-holds-unindexed-tensor", on_source(unindexed_tensor, "lm_head.weight")),
    Case("config-list", on_source(write("config.json", "[1, 2]"), CFG)),
    Case("config-not-json", on_source(write("config.json", "{"), CFG)),
    Case("config-not-utf8", on_source(write("config.json", b"\xff{}"), CFG)),
    Case("config-missing", on_source(remove("config.json"), CFG)),
    Case("config-directory", on_source(make_directory("config.json"), CFG)),
    Case("config-quantization-string", on_source(edit_config(quantization_config="fp8"), CFG, "quantization_config")),
    Case("config-already-quantized", on_source(
        edit_config(quantization_config={"quant_method": "compressed-tensors"}), CFG, "quantization_config")),
    Case("tensor-int64-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 128, dtype=torch.int64)),
                                          EXPERT, "I64")),
    Case("tensor-bool-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 128, dtype=torch.bool)),
                                         EXPERT, "BOOL")),
    Case("tensor-1d-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, dtype=torch.bfloat16)),
                                       EXPERT, "2-D")),
    Case("tensor-nan-expert", on_source(replace_tensor(EXPERT, lambda: torch.full((128, 128), float("nan"))
                                                       .bfloat16()), EXPERT)),
    Case("tensor-inf-expert", on_source(replace_tensor(EXPERT, lambda: torch.full((128, 128), float("inf"))
                                                       .bfloat16()), EXPERT)),
    Case("tensor-already-packed", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 16, dtype=torch.int32)),
                                            EXPERT, "already quantized")),
    Case("gptq-index-dotdot-shard", on_source(
        shard_named("../victim.safetensors"), IDX, "weight_map.", extra=("--method", "gptq"))),
    Case("gptq-index-absolute-shard", on_source(
        shard_named("{tmp}/victim.safetensors"), IDX, "weight_map.", extra=("--method", "gptq"))),
]


# -- quantize options ------------------------------------------------------------------------------


def _out_under_file(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "a-file").write_text("x")
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "a-file" / "out"], ["a-file"]


def _out_is_file(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "a-file").write_text("x")
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "a-file"], ["a-file"]


def _out_foreign_folder(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("the user's")
    return quantize(src, tmp), [str(tmp / "out")]


QUANTIZE_OPTIONS = [
    Case("quantize-out-under-a-file", _out_under_file),
    Case("quantize-out-is-a-file", _out_is_file),
    Case("quantize-out-foreign-folder", _out_foreign_folder),
    Case("quantize-workers-zero", lambda tmp, src: (quantize(src, tmp, "--workers", "0"), ["--workers"])),
    Case("quantize-unknown-scheme", lambda tmp, src: (
        ["quantize", "--model", src, "--scheme", "w5a16", "--out", tmp / "out"], ["w5a16"])),
    Case("quantize-model-missing", lambda tmp, src: (quantize(tmp / "nowhere", tmp), ["nowhere"])),
    Case("quantize-model-is-file", lambda tmp, src: (quantize(src / "config.json", tmp), ["config.json"])),
]
# -- variants files (quantize --variants) ------------------------------------------------------------

CUSTOM = "{name: v, preset: W4A16}"


def variants_file(body: str | bytes, *names: str) -> Callable:
    """A variants file for the source copy; `body` is the `variants:` list (or the whole file as bytes)."""

    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        path = tmp / "variants.yaml"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body.format(src=src) if body.startswith("version") else
                            f"version: 1\nmodel: {src}\noutput_root: {tmp / 'out'}\nvariants:\n{body}\n")
        return ["quantize", "--variants", path], [str(path), *names]

    return make


def variants_directory(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "variants.yaml").mkdir()
    return ["quantize", "--variants", tmp / "variants.yaml"], [str(tmp / "variants.yaml")]


VARIANTS = [
    Case("variants-directory", variants_directory),
    Case("variants-not-utf8", variants_file(b"version: 1\nmodel: \xff\xfe\n")),
    Case("variants-not-yaml", variants_file(b"version: 1\nvariants: [\n")),
    Case("variants-top-level-list", variants_file(b"- 1\n- 2\n")),
    Case("variants-python-tag", variants_file(b"version: !!python/object/apply:os.system ['true']\n")),
    Case("variants-unknown-key", variants_file("  - {name: v, preset: W4A16, colour: red}", "colour")),
    Case("variants-version-2", variants_file("version: 2\nmodel: {src}\nvariants: [{{name: v, preset: W4A16}}]\n",
                                             "version")),
    Case("variants-name-dotdot", variants_file("  - {name: ../escape, preset: W4A16}", "name", "../escape")),
    Case("variants-name-absolute", variants_file("  - {name: /tmp/escape, preset: W4A16}", "name")),
    Case("variants-name-separator", variants_file("  - {name: a/b, preset: W4A16}", "name")),
    Case("variants-name-empty", variants_file("  - {name: '', preset: W4A16}", "name")),
    Case("variants-duplicate-names", variants_file(f"  - {CUSTOM}\n  - {CUSTOM}", "variants", "'v'")),
    Case("variants-duplicate-registered", variants_file("  - {scheme: w4a16-g128}\n  - {scheme: w4a16-g128}",
                                                        "w4a16-g128")),
    Case("variants-num-bits-99", variants_file(
        "  - {name: v, weights: {num_bits: 99, type: int, symmetric: true, strategy: channel}}", "num_bits")),
    Case("variants-num-bits-0", variants_file(
        "  - {name: v, weights: {num_bits: 0, type: int, symmetric: true, strategy: channel}}", "num_bits")),
    Case("variants-group-size-0", variants_file("  - {name: v, preset: W4A16, group_size: 0}", "group_size")),
    Case("variants-group-size-negative", variants_file("  - {name: v, preset: W4A16, group_size: -7}",
                                                       "group_size")),
    Case("variants-weights-group-size-0", variants_file(
        "  - {name: v, weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 0}}",
        "group_size")),
    Case("variants-unknown-preset", variants_file("  - {name: v, preset: W9A16}", "W9A16")),
    Case("variants-preset-and-weights", variants_file(
        "  - {name: v, preset: W4A16, weights: {num_bits: 4}}", "preset")),
    Case("variants-unclosed-regex", variants_file("  - {name: v, preset: W4A16, ignore: ['re:(']}", "re:(")),
    Case("variants-unclosed-regex-target", variants_file("  - {name: v, preset: W4A16, targets: ['re:[a']}",
                                                         "re:[a")),
    Case("variants-workers-zero", variants_file(
        "version: 1\nmodel: {src}\nworkers: 0\nvariants: [{{name: v, preset: W4A16}}]\n", "workers")),
    Case("variants-empty-list", variants_file("version: 1\nmodel: {src}\nvariants: []\n", "variants")),
    Case("variants-unknown-scheme", variants_file("  - {scheme: w5a16}", "w5a16")),
]

# -- plans (gate --plan: the plan is checked before anything is read) -------------------------------------

PLAN = """\
version: 1
name: {name}
model: {model}
variants:
{variants}
suites: {suites}
gates:
{gates}
"""
VARIANT = "  - {name: int4, scheme: w4a16-g128, method: rtn, group: int4}"
GATE = "  - {metric: perplexity.kl_mean, max_value: 0.05}"


def plan_case(*names: str, name: str = "p", variants: str = VARIANT, suites: str = "[perplexity]",
              gates: str = GATE, text: str | bytes | None = None) -> Callable:  # fmt: skip
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        path = tmp / "plan.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text or PLAN.format(name=name, model=src, variants=variants, suites=suites, gates=gates))
        return ["gate", "--plan", path, "--results", tmp], [str(path), *names]

    return make


def plan_directory(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "plan.yaml").mkdir()
    return ["gate", "--plan", tmp / "plan.yaml", "--results", tmp], [str(tmp / "plan.yaml")]


PLANS = [
    Case("plan-directory", plan_directory),
    Case("plan-not-utf8", plan_case(text=b"version: 1\nname: \xff\n")),
    Case("plan-not-yaml", plan_case(text="version: 1\nname: [\n")),
    Case("plan-yaml-bomb", plan_case(text="a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                                          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c]\n")),
    Case("plan-name-dotdot", plan_case("name", name="../escape")),
    Case("plan-name-absolute", plan_case("name", name="/tmp/escape")),
    Case("plan-variant-name-dotdot", plan_case(
        "variants.0.name", variants="  - {name: ../x, scheme: w4a16-g128, method: rtn, group: int4}")),
    Case("plan-checkpoint-dotdot", plan_case("checkpoint", variants=(
        "  - {name: int4, scheme: w4a16-g128, method: rtn, group: int4, checkpoint: ../../x}"))),
    Case("plan-checkpoint-absolute", plan_case("checkpoint", variants=(
        "  - {name: int4, scheme: w4a16-g128, method: rtn, group: int4, checkpoint: /tmp/x}"))),
    Case("plan-endpoint-model-dotdot", plan_case("endpoint.model", variants=(
        "  - {name: vendor, group: int4, endpoint: {base_url: 'http://127.0.0.1:9', model: '..'}}"))),
    Case("plan-duplicate-variants", plan_case("int4", variants=VARIANT + "\n" + VARIANT)),
    Case("plan-variants-share-checkpoint", plan_case("checkpoint", variants=(
        VARIANT + "\n  - {name: int4b, scheme: w4a16-g128, method: rtn, group: int4}"))),
    Case("plan-suite-twice", plan_case("suites", suites="[perplexity, perplexity]")),
    Case("plan-nan-threshold", plan_case("max_value", gates="  - {metric: perplexity.kl_mean, max_value: .nan}")),
    Case("plan-inf-threshold", plan_case(
        "min_recovery", gates="  - {metric: perplexity.perplexity, min_recovery: .inf}")),
    Case("plan-negative-inf-threshold", plan_case(
        "min_value", gates="  - {metric: perplexity.kl_mean, min_value: -.inf}")),
    Case("plan-nan-alpha", plan_case("alpha", gates=(
        "  - {metric: perplexity.kl_mean, no_significant_regression: {p_value: perplexity.p, alpha: .nan}}"))),
    Case("plan-gate-without-threshold", plan_case("kl_mean", gates="  - {metric: perplexity.kl_mean}")),
    Case("plan-gate-unknown-suite", plan_case("benchmark", gates="  - {metric: benchmark.acc, max_value: 1}")),
    Case("plan-gate-unknown-group", plan_case(
        "fp8", gates="  - {metric: perplexity.kl_mean, max_value: 1, groups: [fp8]}")),
    Case("plan-unknown-key", plan_case("colour", text="version: 1\nname: p\ncolour: red\n")),
    Case("plan-version-2", plan_case("version", text="version: 2\nname: p\n")),
    Case("plan-no-variants", plan_case("variants", variants="  []")),
    Case("plan-rtn-with-calibration", plan_case("calibration", variants=(
        "  - {name: int4, scheme: w4a16-g128, method: rtn, group: int4, calibration: c4}"))),
]

# -- options that become paths -----------------------------------------------------------------------------


def nightly_id_case(command: str) -> Callable:
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        plan = tmp / "plan.yaml"
        plan.write_text(PLAN.format(name="p", model=src, variants=VARIANT, suites="[perplexity]", gates=GATE))
        if command == "nightly":
            return ["nightly", "--plan", plan, "--nightly-id", "../../escape", "--reports", tmp / "reports",
                    "--tracking-uri", f"sqlite:///{tmp / 'db'}"], ["--nightly-id"]  # fmt: skip
        argv = ["report", "--plan", plan, "--results", tmp, "--nightly-id", "../../escape",
                "--reports", tmp / "reports", "--tracking-uri", f"sqlite:///{tmp / 'db'}"]  # fmt: skip
        return argv, ["--nightly-id"]

    return make


def nightly_plan(variant: str, *names: str) -> Callable:
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        plan = tmp / "plan.yaml"
        plan.write_text(PLAN.format(name="p", model=src, variants=variant, suites="[perplexity]", gates=GATE))
        argv = ["nightly", "--plan", plan, "--reports", tmp / "reports", "--tracking-uri", f"sqlite:///{tmp / 'db'}"]
        return argv, [str(plan), *names]

    return make


OPTIONS = [
    Case("nightly-unknown-scheme", nightly_plan("  - {name: x, scheme: w5a16, method: rtn, group: g}",
                                                "variants.0.scheme", "w5a16")),
    Case("nightly-id-dotdot", nightly_id_case("nightly")),
    Case("report-nightly-id-dotdot", nightly_id_case("report")),
]

# -- suites and eval options (eval checks suites and checkpoints before loading any model) -------------

PERPLEXITY = "kind: perplexity\nversion: 1\ndata: {data}\ncontext_length: 48\nstride: 48\ntop_k: 8\nbatch_size: 8\n"


def eval_argv(tmp: Path, model: Path, suite: object = "perplexity", *extra: object) -> list:
    return ["eval", "--model", model, "--suite", suite, "--out", tmp / "results", "--cache-dir", tmp / "cache",
            *extra]  # fmt: skip


def suite_case(text: str | bytes, *names: str, file: str = "s.yaml") -> Callable:
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        data = tmp / "text.jsonl"
        data.write_text('{"text": "The capital of Breland is Tulstemar."}\n')
        (tmp / "empty.jsonl").write_text("")
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / "code.yaml").write_text("task: code\ndataset_path: json\nprocess_docs: !function utils.docs\n")
        path = tmp / file
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.format(data=data, tmp=tmp, perplexity=PERPLEXITY.format(data=data)))
        return eval_argv(tmp, src, path), [str(path), *names]

    return make


def eval_model(mutate: Callable[[Path, Path], object], *names: str, extra: tuple = ()) -> Callable:
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        mutate(tmp, src)
        return eval_argv(tmp, src, "perplexity", *extra), [n.format(tmp=tmp, src=src) for n in names]

    return make


def only_bin_weights(tmp: Path, src: Path) -> None:
    for shard in (SHARD_1, SHARD_2):
        (src / shard).rename((src / shard).with_suffix(".bin"))
    (src / INDEX).unlink()


def out_is_file(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "results").write_text("a file")
    return eval_argv(tmp, src), ["--out", str(tmp / "results")]


SUITES = [
    Case("suite-name-dotdot", suite_case("name: ../escape\n{perplexity}", "name")),
    Case("suite-name-absolute", suite_case("name: /tmp/escape\n{perplexity}", "name")),
    Case("suite-unknown-kind", suite_case("kind: vibes\nversion: 1\n", "kind")),
    Case("suite-unknown-key", suite_case("{perplexity}colour: red\n", "colour")),
    Case("suite-top-k-zero", suite_case("kind: perplexity\nversion: 1\ndata: {data}\ncontext_length: 48\nstride: 48\n"
                                        "top_k: 0\nbatch_size: 8\n", "top_k")),
    Case("suite-batch-size-zero", suite_case("kind: perplexity\nversion: 1\ndata: {data}\ncontext_length: 48\n"
                                             "stride: 48\ntop_k: 8\nbatch_size: 0\n", "batch_size")),
    Case("suite-stride-over-context", suite_case("kind: perplexity\nversion: 1\ndata: {data}\ncontext_length: 48\n"
                                                 "stride: 64\ntop_k: 8\nbatch_size: 8\n", "stride")),
    Case("suite-data-missing", suite_case("kind: perplexity\nversion: 1\ndata: {tmp}/gone.jsonl\ncontext_length: 48\n"
                                          "stride: 48\ntop_k: 8\nbatch_size: 8\n", "data")),
    Case("suite-data-empty", suite_case("kind: perplexity\nversion: 1\ndata: {tmp}/empty.jsonl\ncontext_length: 48\n"
                                        "stride: 48\ntop_k: 8\nbatch_size: 8\n", "data", "empty")),
    Case("suite-data-directory", suite_case("kind: perplexity\nversion: 1\ndata: {tmp}\ncontext_length: 48\n"
                                            "stride: 48\ntop_k: 8\nbatch_size: 8\n", "data")),
    Case("suite-toolcall-empty-scenarios", suite_case("kind: toolcall\nversion: 1\nscenarios_file: {tmp}/empty.jsonl\n",
                                                      "scenarios_file", "empty")),
    Case("suite-benchmark-no-tasks", suite_case("kind: benchmark\nversion: 1\ntasks: []\n", "tasks")),
    Case("suite-benchmark-include-missing", suite_case(
        "kind: benchmark\nversion: 1\ntasks: [{{name: x}}]\ninclude_path: {tmp}/no-tasks\n", "include_path")),
    Case("suite-benchmark-task-code", suite_case(
        "kind: benchmark\nversion: 1\ntasks: [{{name: code}}]\ninclude_path: {tmp}/tasks\n", "!function",
        "trust_task_code")),
    Case("suite-directory", lambda tmp, src: ((tmp / "s.yaml").mkdir(), (eval_argv(tmp, src, tmp / "s.yaml"),
                                                                         [str(tmp / "s.yaml")]))[1]),
    Case("suite-not-utf8", suite_case(b"kind: \xff\xfe\n")),
    Case("suite-unknown-name", lambda tmp, src: (eval_argv(tmp, src, "perplexty"), ["perplexty"])),
    Case("suite-twice", lambda tmp, src: (eval_argv(tmp, src, "perplexity", "--suite", "perplexity"), ["--suite"])),
    Case("eval-index-dotdot-shard", eval_model(shard_named("../victim.safetensors"), IDX, "weight_map.")),
    Case("eval-index-absolute-shard", eval_model(shard_named("{tmp}/victim.safetensors"), IDX, "weight_map.")),
    Case("serve-index-dotdot-shard", lambda tmp, src: (shard_named("../victim.safetensors")(tmp, src), (
        ["serve", "--model", src, "--print-command"], [f"{src}/{INDEX}", "weight_map."]))[1]),
    Case("eval-only-bin-weights", eval_model(only_bin_weights, "{src}", ".bin", "safetensors")),
    Case("eval-no-config", eval_model(remove("config.json"), "{src}")),
    Case("eval-threads-zero", eval_model(lambda tmp, src: None, "--threads", extra=("--threads", "0"))),
    Case("eval-batch-size-zero", eval_model(lambda tmp, src: None, "--batch-size", extra=("--batch-size", "0"))),
    Case("eval-device-unknown", eval_model(lambda tmp, src: None, "--device", "tpu:7", extra=("--device", "tpu:7"))),
    Case("eval-base-url-without-openai", eval_model(lambda tmp, src: None, "--base-url",
                                                    extra=("--base-url", "http://127.0.0.1:9"))),
    Case("eval-api-key-env-unset", eval_model(lambda tmp, src: None, "QUANTGATE_NO_SUCH_KEY", extra=(
        "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--api-key-env", "QUANTGATE_NO_SUCH_KEY"))),
    Case("eval-out-is-a-file", out_is_file),
    Case("eval-baseline-twice", eval_model(lambda tmp, src: None, "share a name", extra=("--baseline", "{src}"))),
]


# -- data files of suites, checked line by line at load ------------------------------------------------

SCENARIO = ('{"id": "s1", "tools": ["add_to_cart"], "messages": [{"role": "user", "content": "hi"}], '
            '"max_steps": 3, "initial_state": {}, "expected_calls": [], "expected_state": {}, "expected_answer": "x"}')


def scenarios_case(lines: list[str], *names: str) -> Callable:
    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        data = tmp / "scenarios.jsonl"
        data.write_text("".join(line + "\n" for line in lines))
        suite = tmp / "tc.yaml"
        suite.write_text(f"kind: toolcall\nversion: 1\nscenarios_file: {data}\nparser: hermes\n")
        return eval_argv(tmp, src, suite), [str(data), *names]

    return make


def _scenario(**changes: object) -> str:
    return json.dumps(json.loads(SCENARIO) | changes)


DATA = [
    Case("scenarios-duplicate-ids", scenarios_case([SCENARIO, SCENARIO], ":2", "'s1'")),
    Case("scenarios-max-steps-negative", scenarios_case([_scenario(max_steps=-5)], ":1", "max_steps")),
    Case("scenarios-max-steps-missing", scenarios_case([json.dumps({
        k: v for k, v in json.loads(SCENARIO).items() if k != "max_steps"})], "max_steps")),
    Case("scenarios-unknown-tool", scenarios_case([_scenario(tools=["rm_rf"])], "rm_rf")),
    Case("scenarios-unknown-expected-tool", scenarios_case([_scenario(expected_calls=[{"name": "nope"}])], "nope")),
    Case("scenarios-not-json", scenarios_case(["{not json"], ":1")),
    Case("scenarios-empty-id", scenarios_case([_scenario(id="")], "id")),
    Case("scenarios-unknown-key", scenarios_case([_scenario(colour="red")], "colour")),
    Case("scenarios-no-messages", scenarios_case([_scenario(messages=[])], "messages")),
    Case("scenarios-only-blank-lines", scenarios_case(["   ", ""], "empty")),
]


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4}
ARCHITECTURE = [
    Case("config-empty-object", on_source(write("config.json", "{}"), CFG, "model_type")),
    Case("config-llama-over-moe-tensors", on_source(write("config.json", json.dumps(LLAMA)), CFG, "n_routed_experts")),
    Case("config-too-few-layers", on_source(edit_config(num_hidden_layers=2), CFG, "num_hidden_layers")),
    Case("config-too-few-experts", on_source(edit_config(n_routed_experts=8), CFG, "n_routed_experts")),
    Case("config-layers-a-string", on_source(edit_config(num_hidden_layers="4"), CFG, "num_hidden_layers")),
]



def link_outside(name: str) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        secret = tmp / "home" / "secret.txt"
        secret.parent.mkdir()
        secret.write_text("private")
        (src / name).unlink(missing_ok=True)
        (src / name).symlink_to(secret)

    return mutate


LINKS = [
    Case("side-file-links-outside", on_source(link_outside("tokenizer_config.json"), "{src}/tokenizer_config.json",
                                              "outside the checkpoint")),
    Case("extra-file-links-outside", on_source(link_outside("notes.md"), "{src}/notes.md", "outside the checkpoint")),
]

ALL = QUANTIZE_SOURCE + QUANTIZE_OPTIONS + VARIANTS + PLANS + OPTIONS + SUITES + DATA + ARCHITECTURE + LINKS
