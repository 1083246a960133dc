"""The pipeline from Python, on the shipped example pairs and tiny offline models (seconds on a CPU).

Run from the repository root: `python examples/python_api.py [OUT]`. The README shows the code below as it is (a
test checks that the two agree and runs this file). 1. `compute_hardness` splits each response into sentences,
CLIP-scores them and writes the hardness column δ with δ̄; 2. `load_preference_dataset` reads that output back in
TRL's format, checked row by row; 3. `DAMATrainer` trains DAMA on top of TRL's `DPOTrainer`. A real run swaps the
tiny models for e.g. `DualEncoderScorer.from_pretrained("openai/clip-vit-large-patch14-336")` and
`AutoModelForImageTextToText.from_pretrained("llava-hf/llava-1.5-7b-hf")`.
"""

import sys
from pathlib import Path

from dama import DAMAConfig, DAMATrainer, compute_hardness, load_preference_dataset
from dama.hardness.scorers import DualEncoderScorer
from dama.hardness.splitters import SentenceSplitter
from dama.tiny import build_llava

examples = Path("examples/tiny")
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/python-api")

clip = DualEncoderScorer.from_pretrained("tiny:clip")  # offline test CLIP; or a hub name / folder
compute_hardness(examples / "pairs.jsonl", out / "hardness", clip, SentenceSplitter(), image_root=examples)
pairs, delta_mean = load_preference_dataset(out / "hardness", image_root=str(examples), hardness_column="dama_delta")

model, processor = build_llava(seed=0)  # offline tiny LLaVA; or AutoModelForImageTextToText.from_pretrained(...)
config = DAMAConfig(
    output_dir=str(out / "dama"),
    beta=0.1,
    keep_ratio=0.75,
    max_steps=4,
    per_device_train_batch_size=4,
    learning_rate=1e-3,
    logging_steps=1,
    use_cpu=True,
    report_to=[],
    save_strategy="no",
    activation_checkpointing=False,
    precompute_ref_log_probs=True,
    max_length=None,
)
trainer = DAMATrainer(model=model, args=config, train_dataset=pairs, processing_class=processor, delta_mean=delta_mean)
trainer.train()
trainer.save_model()
