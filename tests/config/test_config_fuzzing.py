"""Issue #18: random configs, not chosen examples. Whatever the YAML file and the `--set`
overrides hold (wrong types, unknown sections and keys, out-of-range values, NaN and infinity,
huge integers, nested junk, broken YAML, bytes that are not UTF-8, an empty file), loading
either gives a `Config` or raises `ConfigError` with one line; never another exception, never
a hang. The configs are checked against the catalogue, as the commands check them: the live
registries give the same answers (test_catalogue.py) but import Keras, 8 s more on CI's cores."""

import contextlib
import dataclasses
import math
import os

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from embedding_net.config import load_config
from embedding_net.config.catalogue import catalogue_registries, load_catalogue
from embedding_net.config.components import MOVED_KEYS
from embedding_net.config.sections import Config
from embedding_net.errors import ConfigError
from fuzzing import Tally, assert_one_line, time_limit

FIELDS = {section.name: {f.name: f for f in dataclasses.fields(section.type)} for section in dataclasses.fields(Config)}
CHOICES = load_catalogue()["choices"]
NAMES = sorted({name for names in CHOICES.values() for name in names if isinstance(name, str)}
               | {"triplet", "contrastive", "semihard", "hardest", "hard", "none", "all", "auto", "omniglot"})


def _plausible(item):
    """Values of the right kind for one field: its default, its choices, numbers near its range."""
    options = [item.default]
    metadata = item.metadata
    options += list(metadata.get("choices", ()))
    if "choices_from" in metadata:
        options += CHOICES[metadata["choices_from"]]
    if "min" in metadata:
        options += [metadata["min"], metadata["min"] + 1, metadata["min"] - 1, metadata.get("max", 2) + 0.5]
    return st.sampled_from([list(o) if isinstance(o, tuple) else o for o in options])


SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 300), st.integers(-2**80, 2**80),
    st.sampled_from([2**63, 10**400, -(10**400), int("9" * 4000)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324]),
    st.text(max_size=12), st.sampled_from(NAMES),
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=6) | st.integers(), inner, max_size=4), max_leaves=12)
KEYS = st.sampled_from(sorted({k for keys in FIELDS.values() for k in keys} | {k.split(".")[1] for k in MOVED_KEYS}))


def _often(draw, tenths):
    """True `tenths` times in ten: mostly plausible input, so that some of it loads."""
    return draw(st.integers(0, 9)) < tenths


@st.composite
def raw_configs(draw):
    """Nested dicts: known and unknown sections, keys known to the section, to another one, or
    to none, with plausible values or junk; now and then not a mapping at all."""
    if not _often(draw, 9):
        return draw(JUNK)
    raw = {}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(sorted(FIELDS)) if _often(draw, 8) else st.text(max_size=8) | st.integers())
        if not _often(draw, 9):
            raw[section] = draw(JUNK)
            continue
        values = raw.setdefault(section, {}) if isinstance(raw.get(section, {}), dict) else {}
        fields = FIELDS.get(section, {})
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.sampled_from(sorted(fields)) if fields and _often(draw, 8) else KEYS | st.text(max_size=8))
            values[key] = draw(_plausible(fields[key]) if key in fields and _often(draw, 7) else JUNK)
    return raw


@st.composite
def plausible_config_bytes(draw):
    """A well-formed file of known keys with plausible values: what a user writes, mostly."""
    raw = {}
    for section in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        keys = draw(st.lists(st.sampled_from(sorted(FIELDS[section])), max_size=3, unique=True))
        raw[section] = {key: draw(_plausible(FIELDS[section][key])) for key in keys}
    return yaml.safe_dump(raw).encode("utf-8")


# Text that YAML chokes on, or that PyYAML builds something odd from, spliced into a good file.
SPLICES = ["\t", "[", "{", "]", "}", "'", '"', ": ", "- ", "? ", "&a ", "*a", "*nowhere", "&a 1\n&a 2\n",
           "!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!set {a, b}", "!!timestamp 2001-12-14",
           "!!timestamp x", "!!bool x", "!!int", "!!float .", "!!omap [1]",
           "%YAML 1.1\n", "---\n", "...\n", "\x00", "\ufeff", "\x85", "<<: *a\n", "\\", "%"]


@st.composite
def config_bytes(draw):
    """The bytes of a config file: dumped YAML, then perhaps cut, spliced or re-encoded."""
    raw = draw(raw_configs())
    try:
        text = yaml.safe_dump(raw, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.booleans()))
    except yaml.YAMLError:
        text = repr(raw)
    mutation = "none" if _often(draw, 5) else draw(st.sampled_from(["cut", "splice", "bytes", "encoding", "indent"]))
    if mutation == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif mutation == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(SPLICES) | st.text(max_size=4)) + text[at:]
    elif mutation == "indent":
        text = text.replace("\n  ", "\n\t" if draw(st.booleans()) else "\n ")
    data = text.encode("utf-8", "surrogatepass")
    if mutation == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif mutation == "encoding":
        data = text.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"])), "replace")
    return data


def _override_value(value):
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
    except yaml.YAMLError:
        return repr(value)


@st.composite
def overrides(draw):
    """`--set` arguments: section.key=value with YAML values, and malformed ones."""
    result = []
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from(sorted(FIELDS)) if _often(draw, 8) else st.text(max_size=5))
        fields = FIELDS.get(section, {})
        key = draw(st.sampled_from(sorted(fields)) if fields and _often(draw, 8) else KEYS | st.text(max_size=5))
        if key in fields and _often(draw, 6):
            value = _override_value(draw(_plausible(fields[key])))
        else:
            value = draw(st.text(max_size=10) | st.sampled_from(SPLICES) | JUNK.map(_override_value))
        if _often(draw, 8):
            result.append(f"{section}.{key}={value}")
        else:
            result.append(draw(st.sampled_from([f"{section}={value}", f"{section}.{key}", f"{section}.{key}.x={value}",
                                                f"{section}.{key}= {value}", f"{section}..{key}={value}"])))
    return result


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
EXAMPLES = [
    b"", b"\n", b"---\n", b"~\n", b"[]\n", b"42\n", b"\xff\xfe\x00\x01", b"\x00", "\ufeff".encode() + b"train: {}\n",
    b"train:\n\tepochs: 3\n", b"train: [epochs: 3\n", b"a: &x 1\nb: &x 2\n", b"train: {epochs: 1, epochs: 2}\n",
    b"train:\n  epochs: *missing\n", b"model: &m {backbone: conv4}\ndata: *m\n", b"train: &t {}\ntrain2: *t\n",
    b"[" * 3000 + b"]" * 3000, b"train:\n  epochs: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    b"train:\n  epochs: 1" + b"0" * 5000 + b"\n", b"train:\n  learning_rate: 1" + b"0" * 400 + b"\n",
    b"train:\n  learning_rate: .inf\n", b"train:\n  learning_rate: .nan\n", b"train:\n  learning_rate: 1e400\n",
    b"train:\n  'ep\nochs': 3\n", b'train:\n  "ep\\nochs": 3\n', b'"tra\\nin":\n  epochs: 3\n',
    b"train:\n  epochs: &r [*r]\n", ("stuff:\n  " + LAUGHS.replace("\n", "\n  ") + "\ntrain:\n  epochs: *i\n").encode(),
    (LAUGHS + "train:\n  epochs: *i\n").encode(), b"loss: []\n", b"loss: 0\n", b"loss: ''\n",
    b"train:\n  epochs: !!timestamp x\n", b"train:\n  nesterov: !!bool x\n", b"train:\n  epochs: !!int\n",
    b"train:\n  seed: !!int +\n", b"train:\n  epochs: !!timestamp 2001-13-45\n",
]


def _load(data, sets, folder, tally):
    path = os.path.join(folder, "config.yml")
    with open(path, "wb") as handle:
        handle.write(data)
    with time_limit(10, "load_config"):
        try:
            with catalogue_registries():
                config = load_config(path, sets)
        except ConfigError as error:
            assert_one_line(str(error))
            assert len(str(error)) < 1000, str(error)[:1000]  # values are shown cut short
            tally["one-line ConfigError"] += 1
            return
    assert isinstance(config, Config)
    tally["loaded"] += 1


def test_random_configs_load_or_fail_with_one_line(tmp_path_factory):
    folder, tally = str(tmp_path_factory.mktemp("configs")), Tally()

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=config_bytes(), sets=overrides())
    def check(data, sets):
        _load(data, sets, folder, tally)

    for data in EXAMPLES:  # the cases that failed before, and the ones YAML's spec warns of
        check = example(data=data, sets=[])(check)
    for text in ["train.learning_rate=1" + "0" * 400, "train.epochs=" + "[" * 3000, "train.epochs=1" + "0" * 5000,
                 "train.ep\nochs=3", "tra\nin.epochs=3", "train.epochs=*a", "train.epochs=&a [*a]", "train"]:
        check = example(data=b"", sets=[text])(check)
    check()
    tally.report("config files")
    assert tally["loaded"] and tally["one-line ConfigError"], tally  # neither outcome is never drawn


def test_random_configs_through_the_command_print_or_fail_with_one_error_line(tmp_path_factory, capsys):
    """`embedding-net train --config FILE --print-config`: status 0 and a config that loads back
    as the same one, or status 2 and one `error:` line (warnings aside), never a traceback."""
    from embedding_net.cli import main

    folder, tally = tmp_path_factory.mktemp("command"), Tally()
    path = str(folder / "config.yml")

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    # Hypothesis starts from the first choice of each strategy: plausible files reading Omniglot.
    @given(data=plausible_config_bytes() | config_bytes(), sets=overrides(), shipped=st.sampled_from([True, False]))
    def check(data, sets, shipped):
        sets = ["data.dataset=omniglot"] * shipped + sets  # else most fail for want of data
        with open(path, "wb") as handle:
            handle.write(data)
        capsys.readouterr()
        with time_limit(20, "embedding-net train --print-config"), contextlib.chdir(folder):
            status = main(["train", "--config", path, "--print-config", *(f"--set={s}" for s in sets)])
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert all(line.startswith(("error: ", "warning: ")) for line in lines), err
        errors = [line for line in lines if line.startswith("error: ")]
        if status == 2:
            assert len(errors) == 1 and out == "", (out, err)
            tally["status 2, one error line"] += 1
            return
        assert status == 0 and not errors, (status, err)
        printed = folder / "printed.yml"
        printed.write_text(out, encoding="utf-8")
        with catalogue_registries():
            assert load_config(str(printed)) == load_config(path, sets)
        tally["status 0, printed"] += 1

    check = example(data=b"data:\n  dataset: omniglot\n", sets=["train.epochs=3"], shipped=False)(check)
    check = example(data=b"train: [epochs: 3\n", sets=[], shipped=True)(check)
    check()
    tally.report("configs through the command")
    assert tally["status 0, printed"] and tally["status 2, one error line"], tally
