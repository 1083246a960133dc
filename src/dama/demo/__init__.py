"""`dama demo`: a synthetic visual world in which the whole DAMA pipeline runs on a CPU.

- `world`: procedurally drawn scenes of glyph objects with ground truth, captions, questions and a CHAIR-format
  synonym list; some classes co-occur, which is what makes a captioner hallucinate.
- `models`: a tiny CLIP (the hardness scorer) and a tiny LLaVA (the base model) trained on the world, cached on disk.
- `preferences`: RLAIF-V-style preference pairs sampled from the base model and labelled with ground truth.

Submodules are imported on use, so `import dama.demo` stays cheap.
"""
