"""Bad config files, data files and options (variants files, plans, suites, scenarios, eval options), one
per case: each writes its bad files under the test folder and gives the argv and what the one-line error
must name (see checkpoint_cases.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.adversarial.checkpoint_cases import INDEX, SHARD_1, SHARD_2, Case, remove, shard_named

IDX = "{src}/" + INDEX

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

CASES = VARIANTS + PLANS + OPTIONS + SUITES + DATA
