"""What the tests need from outside the repository: ``make test`` looks for it first
(``scripts/test_weights.py``), and the pytest header names what is still missing."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_tests_weights_step_is_quiet_and_light_when_the_file_is_there(tmp_path):
    """``make test`` asks for the ImageNet weights first: with a file where the tests look,
    it says nothing, downloads nothing and starts no TensorFlow."""
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"x")
    code = (
        "import runpy, sys\nsys.argv = ['test_weights']\n"
        "try:\n    runpy.run_path('scripts/test_weights.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "print('keras' in sys.modules)"
    )
    env = {**os.environ, "SHAPES_TEST_WEIGHTS": str(weights), "KERAS_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.stdout == "False\n", done.stdout + done.stderr
    assert not (tmp_path / "models").exists()
