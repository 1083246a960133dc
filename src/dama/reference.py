"""Reference log-probs precomputed for vision datasets, with the exact training preprocessing (METHOD.md §7).

TRL refuses `precompute_ref_log_probs` for vision data. Here the pass runs the trainer's own collator (the same
processor, chat template, truncation) over the dataset in file order, so at step 0 the policy's log-probs equal the
stored ones and every margin h_i is 0. Training then needs no resident reference model.

`dama precompute-ref --config recipe.yaml --out DIR` stores the columns `ref_chosen_logps`/`ref_rejected_logps` with
the data, so later runs (and every rank) read them instead of recomputing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dama.data import DATA_META
from dama.io import atomic_write_json, check_writable


@torch.no_grad()
def compute_reference_logps(trainer: Any, model: Any, dataset: Any) -> tuple[list[float], list[float]]:
    """Summed response log-probs of `model` for every pair of `dataset`, in dataset order: `(chosen, rejected)`."""
    from dama.trainer import REF_COLUMNS

    loader = DataLoader(
        dataset,
        batch_size=trainer.args.precompute_ref_batch_size or trainer.args.per_device_train_batch_size,
        collate_fn=trainer.data_collator,
        num_workers=trainer.args.dataloader_num_workers,
        shuffle=False,
    )
    loader = trainer.accelerator.prepare(loader)
    if trainer.ref_model is None and trainer.is_deepspeed_enabled:
        from trl.models.utils import prepare_deepspeed

        model = prepare_deepspeed(trainer.model, trainer.accelerator)
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for batch in tqdm(loader, desc="Reference log-probs", disable=not trainer.accelerator.is_local_main_process):
        for name in (trainer.args.hardness_column, *REF_COLUMNS):
            batch.pop(name, None)
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, batch)
        ref_chosen, ref_rejected = trainer.accelerator.gather_for_metrics((ref_chosen, ref_rejected))
        chosen.extend(ref_chosen.float().cpu().tolist())
        rejected.extend(ref_rejected.float().cpu().tolist())
    model.train(was_training)
    return chosen, rejected


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="dama precompute-ref",
        description="Store reference log-probs (computed with the recipe's exact preprocessing) next to the data.",
    )
    parser.add_argument("--out", required=True, help="Output folder: the dataset with ref_*_logps columns.")
    known, rest = parser.parse_known_args(argv)
    if "--config" not in rest:
        parser.error("--config RECIPE.yaml is required (the training recipe whose preprocessing is used)")
    from dama.train import build_trainer

    check_writable(Path(known.out).parent, "--out")  # before the reference pass, not after it
    trainer = build_trainer([*rest, "--precompute_ref_log_probs", "true"])
    if trainer.accelerator.is_main_process:
        out = Path(known.out)
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        trainer.train_dataset.save_to_disk(str(tmp))
        # δ̄ travels with the data, as `dama hardness` stores it (read back by dama.data)
        atomic_write_json(tmp / DATA_META, {"delta_mean": trainer.delta_mean})
        old = out.with_name(out.name + ".old")
        if out.exists():  # moved aside, not deleted in place: a kill never leaves a half-deleted dataset at `out`
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        print(f"dama precompute-ref: {len(trainer.train_dataset)} pairs with reference log-probs in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
