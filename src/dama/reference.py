"""`dama precompute-ref`: reference log-probs precomputed for a vision dataset (docs/paper_mapping.md §7).

TRL refuses `precompute_ref_log_probs` for vision data. `DAMATrainer` does the pass itself with its own collator (the
same processor, chat template, truncation) over the dataset in file order, so at step 0 the policy's log-probs equal
the stored ones and every margin h_i is 0. Training then needs no resident reference model.

`dama precompute-ref --config recipe.yaml --out DIR` stores the columns `ref_chosen_logps`/`ref_rejected_logps` with
the data, so later runs (and every rank) read them instead of recomputing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from dama.io import atomic_write_json, check_writable, replace_folder
from dama.preference_data import DATA_META
from dama.train import build_trainer


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
    check_writable(Path(known.out).parent, "--out")  # before the reference pass, not after it
    trainer = build_trainer([*rest, "--precompute_ref_log_probs", "true"])
    if trainer.accelerator.is_main_process:
        out = Path(known.out)
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        trainer.train_dataset.save_to_disk(str(tmp))
        # δ̄ travels with the data, as `dama hardness` stores it (read back by dama.preference_data)
        atomic_write_json(tmp / DATA_META, {"delta_mean": trainer.delta_mean})
        replace_folder(tmp, out)  # the old dataset is moved aside, never half-deleted in place
        print(f"dama precompute-ref: {len(trainer.train_dataset)} pairs with reference log-probs in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
