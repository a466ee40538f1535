"""Module 6 of the course: distillation beyond image classification.

One module per lesson (``notebooks/06_applications/``), each holding the machinery its lesson needs beyond a loss
(losses stay in :mod:`kdtools.losses`):

- :mod:`~kdtools.applications.detection` — multi-digit detection canvases built from MNIST, a small dense detector
  whose box branch predicts a distribution over each box edge (GFL), its training, decoding and mAP, and a small
  segmenter on the same canvases;
- :mod:`~kdtools.applications.segmentation` — a small encoder-decoder segmenter of the same canvases (11 pixel
  classes), its training with or without pixel-wise distillation, mIoU (torchmetrics) and the zoo teacher;
- :mod:`~kdtools.applications.g2p` — grapheme-to-phoneme on the CMU Pronouncing Dictionary: splits, seq2seq
  teacher and student, greedy and beam decoding, phoneme and word error rates.

Submodules are imported on use (``from kdtools.applications import detection``), so importing the package is free;
they need the optional packages of ``pip install "kdtools[applications]"``.
"""
