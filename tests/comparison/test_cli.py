from pathlib import Path

import pytest

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
    assert exit_info.value.code == 2
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
            raise RuntimeError("python -m training.train... failed (exit 1); see train.log.")
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
