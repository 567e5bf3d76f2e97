import json
from pathlib import Path

import pytest
import torch

from comparison import runner, untrained


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (runner.main, [], "No protocol file configs/ablations/protocol-cpu.yaml: run from the repository root"),
        (runner.main, ["--protocol", "{tmp}/p.yaml", "--variants", "nope"], "No variant file ['nope']"),
        (runner.main, ["--protocol", "{tmp}/p.yaml", "--variants", "cl_only"], "--method cl_automlm is not among"),
        (runner.main, ["--protocol", "{tmp}/p.yaml", "--variants", "cl_only", "--method", "cl_only"], "make data"),
        (untrained.main, ["{tmp}/no-run", "{tmp}/out"], "not the output folder of a finished automlm-train run"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(main, argv, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "p.yaml").write_text("max_steps: 1\n")
    (tmp_path / "cl_only.yaml").write_text("auto_mlm_weight: 0.0\n")
    monkeypatch.chdir(tmp_path)  # no configs/ or data/ here
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(tmp=tmp_path) for arg in argv])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    """Every other run still trains and is evaluated; the command then names the failed run and exits with 1."""
    for name in ("p", "cl_only", "cl_automlm", "cl_mlm"):
        (tmp_path / f"{name}.yaml").write_text("max_steps: 1\n")
    for _, folder, _ in runner.EVAL_SETS:
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    trained, evaluated = [], []

    def train_one(protocol: Path, variant: str, seed: int, runs_dir: Path) -> Path:
        if variant == "cl_only":  # the first queued run fails
            raise RuntimeError("python -m training.train... failed (exit 1); see console.log.")
        trained.append(variant)
        return runs_dir / variant / f"seed-{seed}"

    monkeypatch.setattr(runner, "train_one", train_one)
    monkeypatch.setattr(runner, "untrained_one", lambda protocol, seed, runs_dir: runs_dir / "untrained")
    monkeypatch.setattr(runner, "evaluate_one", lambda model, name, *args: evaluated.append((model, name)))
    argv = ["--protocol", "p.yaml", "--variants", "cl_only", "cl_automlm", "cl_mlm", "--method", "cl_automlm",
            "--seeds", "0", "--workers", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        runner.main(argv)
    assert exit_info.value.code == 1
    assert trained == ["cl_automlm", "cl_mlm"]
    assert {Path(model).parent.name for model, _ in evaluated} == {"seed-0", "untrained"}
    assert len(evaluated) == 3 * len(runner.EVAL_SETS)  # two trained runs and the untrained one, every set
    error = capsys.readouterr().err
    assert "1 of 4 runs failed" in error and "cl_only seed 0: python -m training.train" in error, error


def test_the_report_names_the_command_that_reproduces_it():
    from comparison import runner

    parser = runner.build_parser()
    argv = ["--protocol", "configs/adaptation/protocol-e5-cpu.yaml", "--method", "cl_automlm",
            "--variants", "cl_automlm", "tsdae", "--seeds", "0", "2", "--figures-dir", "figs"]  # fmt: skip
    args = parser.parse_args(argv)
    command = runner.reproduce_command(args)
    assert command.startswith("automlm-compare ")
    assert parser.parse_args(command.split()[1:]) == args


@pytest.mark.parametrize(
    ("peer", "rate"), [("tsdae", 1e-5), ("tsdae_untied", 1e-5), ("tsdae_lr5e6", 5e-6), ("tsdae_lr25e7", 2.5e-6)]
)
def test_a_peer_trains_with_the_protocol_and_its_own_arguments(peer, rate, tmp_path, monkeypatch):
    """Each peer name runs `comparison.tsdae` on the protocol, and its extra arguments reach the training options."""
    from training.arguments import parse_args

    commands = []
    monkeypatch.setattr(runner, "_run", lambda command, log: commands.append(command))
    protocol = Path("configs/adaptation/protocol-e5-cpu.yaml").resolve()
    runner.train_one(protocol, peer, 3, tmp_path)
    (command,) = commands
    assert command[1:3] == ["-m", "comparison.tsdae"]
    options = command[3:]
    assert options[: len(runner.PEERS[peer])] == runner.PEERS[peer]
    _, _, args = parse_args([option for option in options if option != "--untied"])
    assert args.learning_rate == pytest.approx(rate)  # the rate docs/RESULTS.md reports for this peer
    assert ("--untied" in options) == peer.endswith("untied")
    assert args.seed == 3 and args.output_dir == str(tmp_path / peer / "seed-3")


def test_the_variants_are_the_files_beside_the_protocol(tmp_path, monkeypatch):
    """No list to keep in step with configs/: every YAML beside the protocol but the protocols, the method first."""
    for protocol in (Path("configs/ablations/protocol-cpu.yaml"), Path("configs/adaptation/protocol-e5-cpu.yaml")):
        files = {path.stem for path in protocol.parent.glob("*.yaml") if not path.stem.startswith("protocol")}
        found = runner.variants(protocol)
        assert found[0] == runner.METHOD and set(found) == files and found[1:] == sorted(files - {runner.METHOD})
    for name in ("protocol.yaml", "protocol-gpu.yaml", "b.yaml", "a.yaml", "cl_automlm.yaml", "notes.txt"):
        (tmp_path / name).write_text("max_steps: 1\n")
    assert runner.variants(tmp_path / "protocol.yaml") == ["cl_automlm", "a", "b"]
    monkeypatch.chdir(tmp_path)  # no data/ here
    args = runner.build_parser().parse_args(["--protocol", str(tmp_path / "protocol.yaml")])
    with pytest.raises(FileNotFoundError, match="make data"):  # the variants filled in, the data sets missing
        runner._check(args)
    assert args.variants == ["cl_automlm", "a", "b"]


def test_the_default_rate_peer_trains_at_automlm_train_default_and_is_named_after_it():
    from training.arguments import parse_args

    default = parse_args([])[2].learning_rate  # the embedded default, configs/default.yaml
    assert runner.PEERS[f"tsdae_lr{runner.rate_tag(default)}"] == ["--learning_rate", str(default)]
    # The names follow the variant files' convention: `<variant>_lr<tag>` trains at the rate the tag spells.
    named = [path for path in Path("configs/adaptation").glob("*_lr*.yaml")]
    assert named
    for path in named:
        tag = path.stem.split("_lr")[1].split("_")[0]
        _, _, args = parse_args(["--config", "configs/adaptation/protocol-e5-cpu.yaml", "--config", str(path)])
        assert runner.rate_tag(args.learning_rate) == tag, path


def test_the_untrained_baseline_runs_the_untrained_module(tmp_path, monkeypatch):
    """Like every other system, a module run in a subprocess: `python -m comparison.untrained --config PROTOCOL`."""
    commands = []
    monkeypatch.setattr(runner, "_run", lambda command, log: commands.append((command, log)))
    protocol = Path("configs/ablations/protocol-cpu.yaml").resolve()
    run_dir = runner.untrained_one(protocol, 3, tmp_path)
    ((command, log),) = commands
    assert command[1:3] == ["-m", "comparison.untrained"] and log == run_dir / "console.log"
    args = untrained.build_parser().parse_args(command[3:])
    assert (args.config, args.seed, args.output_dir, args.run_dir) == ([protocol], 3, run_dir, None)


def test_untrained_from_settings_and_the_twin_of_a_run_are_the_same_model(tmp_path, capsys):
    """`--config` exports what automlm-train would start from (a tokenizer trained, the seed applied); the twin of
    a run with those settings and that tokenizer rebuilds the same weights."""
    from safetensors.torch import load_file

    from tests.conftest import SENTENCES
    from training.arguments import parse_args, settings_dict

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n")
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(
        "model: {backbone: scratch, num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, "
        f"intermediate_size: 64, tokenizer_vocab_size: 200}}\ndata: {{train_files: [{corpus}], max_seq_length: 16}}\n"
    )
    untrained.main(["--config", str(protocol), "--seed", "3", str(tmp_path / "settings")])
    assert (tmp_path / "settings" / "tokenizer" / "tokenizer.json").is_file()
    run = tmp_path / "settings"  # a run folder as automlm-train leaves it: its settings and its tokenizer
    settings = settings_dict(*parse_args(["--config", str(protocol), "--seed", "3"]))
    (run / "training_config.json").write_text(json.dumps(settings))
    untrained.main([str(run), str(tmp_path / "twin")])
    first, twin = (load_file(folder / "final" / "model.safetensors") for folder in (run, tmp_path / "twin"))
    assert first.keys() == twin.keys() and all(torch.equal(first[name], twin[name]) for name in first)
    assert json.loads((tmp_path / "twin" / "settings.json").read_text())["seed"] == 3
    out = capsys.readouterr().out
    assert "Untrained model of" in out and "Untrained twin of" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["out"], "pass either RUN_DIR or --config"),
        (["run", "out", "--config", "p.yaml"], "pass either RUN_DIR or --config"),
        (["run", "out", "--seed", "1"], "--seed goes with --config"),
    ],
)
def test_untrained_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        untrained.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
