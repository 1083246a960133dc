"""Regenerate the tiny example preference set shipped in this folder (12 pairs, RLAIF-V format, 24×24 images).

    python examples/tiny/make_example.py

Each image shows one or two coloured shapes; `chosen` describes them, `rejected` adds a wrong object (a hard pair)
or gets everything wrong (an easy pair). It exists so `dama hardness` and `dama train` can be tried offline.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")


def draw(canvas: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], box: tuple[int, int, int, int]):
    x0, y0, x1, y1 = box
    if shape == "square":
        canvas.rectangle(box, fill=colour)
    elif shape == "circle":
        canvas.ellipse(box, fill=colour)
    else:
        canvas.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def main() -> None:
    rng = random.Random(0)
    (HERE / "images").mkdir(exist_ok=True)
    rows = []
    for i in range(12):
        objects = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(1 + i % 2)]
        image = Image.new("RGB", (24, 24), (245, 245, 245))
        canvas = ImageDraw.Draw(image)
        for j, (colour, shape) in enumerate(objects):
            draw(canvas, shape, COLOURS[colour], (2 + 11 * j, 6, 11 + 11 * j, 17))
        name = f"images/{i:02d}.png"
        image.save(HERE / name)
        truth = " and ".join(f"a {c} {s}" for c, s in objects)
        if i % 3 == 0:  # easy pair: everything wrong
            wrong = " and ".join(f"a {rng.choice(list(COLOURS))} {rng.choice(SHAPES)}" for _ in range(3))
            rejected = f"The image shows {wrong}. There is also a large tree."
        else:  # hard pair: one extra object
            rejected = f"The image shows {truth}. There is also a small {rng.choice(SHAPES)}."
        rows.append(
            {
                "idx": i,
                "question": "Describe the image.",
                "chosen": f"The image shows {truth}.",
                "rejected": rejected,
                "image": name,
            }
        )
    with (HERE / "pairs.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
