"""Module 5 of the course: distillation paradigms that drop one of vanilla KD's assumptions.

One module per lesson (``notebooks/05_paradigms/``), each holding the machinery its lesson needs beyond a loss
(losses stay in :mod:`kdtools.losses`):

- :mod:`~kdtools.paradigms.audio` — the Free Spoken Digit Dataset as log-mel "images" and its pairing with
  MNIST, the data of cross-modal distillation (also loaded by :func:`kdtools.data.load_fsdd`);
- :mod:`~kdtools.paradigms.cross_modal` — the paired data set, the label-free arms and the reverse direction
  (the student's modality differs from the teacher's);
- :mod:`~kdtools.paradigms.mutual` — deep mutual learning (no pre-trained teacher: peers teach each other);
- :mod:`~kdtools.paradigms.data_free` — DeepInversion and generator-based synthesis (no training data);
- :mod:`~kdtools.paradigms.born_again` — born-again generations (no bigger teacher);
- :mod:`~kdtools.paradigms.assistants` — teacher assistants (a teacher too big for the student).

Submodules are imported on use (``from kdtools.paradigms import audio``), so importing the package is free.
"""
