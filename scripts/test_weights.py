"""``make test``'s ImageNet weights: the tests that need a model whose outputs differ from
image to image load MobileNet's ImageNet weights from a file (``tests/helpers.py`` says
where it looks). Where none is there and this machine is online, Keras downloads them
(``keras.applications``, its own cache) and they are saved where the tests look next.
Offline, one line says what is missing; the tests that need the file name it again."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from weights import MISSING, keras_cached_weights, weights_file  # noqa: E402


def main() -> int:
    if weights_file() is not None:
        return 0
    import keras

    target = keras_cached_weights()
    try:
        net = keras.applications.MobileNet(
            weights="imagenet", include_top=False, input_shape=(224, 224, 3)
        )
    except Exception as e:  # offline: urllib's or Keras' own error; the tests say it again
        print(f"{MISSING['weights']} (Keras could not download them: {type(e).__name__})")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    net.save_weights(target)
    print(f"saved Keras' ImageNet weights of MobileNet to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
