"""Helpers shared by the CLI tests: the one-line-error check and saving arrays as .npy files for a command."""

import numpy as np

from nclab.cli import main


def one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("error: ") and cap.err.count("\n") == 1 and needle in cap.err, cap.err
    return cap.err


def save_arrays(tmp_path, **arrays):
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
    return {name: str(tmp_path / f"{name}.npy") for name in arrays}
