"""Module 6 of the course: distillation beyond image classification.

One module per lesson (``notebooks/06_applications/``), each holding the machinery its lesson needs beyond a loss
(losses stay in :mod:`kdtools.losses`):

- :mod:`~kdtools.applications.detection` — multi-digit detection canvases built from MNIST, a small dense detector
  whose box branch predicts a distribution over each box edge (GFL), its training, decoding and mAP;
- :mod:`~kdtools.applications.segmentation` — a small encoder-decoder segmenter of the same canvases (11 pixel
  classes), its training with or without pixel-wise distillation, mIoU (torchmetrics) and the zoo teacher;
- :mod:`~kdtools.applications.g2p` — grapheme-to-phoneme on the CMU Pronouncing Dictionary: splits, seq2seq
  teacher and student, greedy and beam decoding, phoneme and word error rates;
- :mod:`~kdtools.applications.reasoning` — arithmetic problems with step-by-step traces, a tiny decoder-only
  transformer, sampling with rejection of unverified traces, and students fine-tuned on the kept traces;
- :mod:`~kdtools.applications.diffusion` — a small v-prediction diffusion model (cosine schedule), the DDIM
  sampler, progressive distillation of N sampler steps into N/2, and sample-quality distances;
- :mod:`~kdtools.applications.streaming` — a stream of observations with predictable action sequences, teacher
  and student anticipators, and offline vs streaming evaluation on a simulated clock driven by measured latencies;
- :mod:`~kdtools.applications.compression_trinity` — distillation, pruning (``torch.nn.utils.prune``) and int8
  quantisation of one student, alone and combined, with size on disk and measured CPU latency.

Submodules are imported on use (``from kdtools.applications import detection``), so importing the package is free;
they need the optional packages of ``pip install "kdtools[applications]"``.
"""
