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
