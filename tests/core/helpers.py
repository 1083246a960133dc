"""Small builders for the core tests: vision preference data and trainer configs."""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset
from PIL import Image

COLOURS = ["red", "blue", "green", "yellow"]
OBJECTS = ["cat", "dog", "cup", "car", "tree", "bird"]


def make_vision_pairs(n: int = 8, seed: int = 0, with_delta: bool = True, textured: bool = False) -> Dataset:
    """n distinct (image, prompt, chosen, rejected[, dama_delta]) rows in TRL's conversational vision format.

    Images are one colour each, or with `textured` a colour ramp per image (a crop of it is another image: mDPO).
    """
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"image": [], "prompt": [], "chosen": [], "rejected": []}
    deltas = []
    for i in range(n):
        colour, obj, wrong = rng.choice(COLOURS), rng.choice(OBJECTS), rng.choice(OBJECTS)
        rgb = (40 * (i % 6), 25 * (i % 9), 200 - 20 * (i % 7))
        image = Image.new("RGB", (20 + i % 3, 20), rgb)
        if textured:
            image.putdata([((x * 12 + rgb[0]) % 256, (y * 12 + rgb[1]) % 256, rgb[2])
                           for y in range(image.height) for x in range(image.width)])  # fmt: skip
        rows["image"].append(image)
        rows["prompt"].append([{"role": "user", "content": "Describe the image."}])
        rows["chosen"].append([{"role": "assistant", "content": f"A {colour} {obj}."}])
        rows["rejected"].append([{"role": "assistant", "content": f"A {colour} {obj} and a {wrong} on a table {i}."}])
        deltas.append(round(rng.uniform(-0.5, 0.9), 3))
    if with_delta:
        rows["dama_delta"] = deltas
    return Dataset.from_dict(rows)


def cpu_config(output_dir: str, **overrides: Any):
    from dama import DAMAConfig

    base = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=0,
        data_seed=0,
        activation_checkpointing=False,
        dataloader_num_workers=0,
        max_length=None,
    )
    base.update(overrides)
    return DAMAConfig(**base)
