"""The command line: sub-commands call the package and print our errors plainly, with exit status 2."""

from mri_synth import cli


def test_data_prints_class_counts(capsys):
    assert cli.main(["data", "sample"]) == 0
    out = capsys.readouterr().out
    assert "Moderate_Demented" in out and "298" in out


def test_bad_source_is_a_plain_error(capsys, tmp_path):
    assert cli.main(["data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_unknown_profile_is_a_plain_error(capsys):
    assert cli.main(["notebooks", "--profile", "nope"]) == 2
    assert "not found" in capsys.readouterr().err
