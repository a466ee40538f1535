r"""The Free Spoken Digit Dataset (FSDD) as log-mel spectrogram "images", and its pairing with MNIST.

FSDD (Zohar Jackson et al., release v1.0.10 of github.com/Jakobovski/free-spoken-digit-dataset, licence
CC BY-SA 4.0) holds 3,000 recordings of the spoken digits 0–9: 6 speakers × 10 digits × 50 takes, mono 16-bit
PCM at 8 kHz, 0.14–2.28 s long, named ``{digit}_{speaker}_{take}.wav``. The dataset's own split is kept:
takes 0–4 are the test set (300 recordings), takes 5–49 the training set (2,700), so every speaker appears in
both but no recording does.

Features (computed with torch only, no audio package):

- every recording is centred in a window of :data:`DURATION_S` = 1 s (8,000 samples): shorter ones are padded
  with silence on both sides, the few longer ones (mostly over 1 s of trailing silence or a slow speaker) lose
  the same amount at both ends. One second holds the spoken digit of almost every recording (mean length
  0.44 s) and gives every example the same shape, like an MNIST image;
- a short-time Fourier transform with a Hann window of 256 samples (32 ms) and a hop of 250 samples
  (31.25 ms), centred frames, keeping the first :data:`N_FRAMES` = 32;
- the power spectrum summed into :data:`N_MELS` = 32 triangular mel bands from 0 to 4 kHz (the HTK mel scale
  :math:`m = 2595 \log_{10}(1 + f/700)`, band edges equally spaced in mel), then
  :math:`\log(\cdot + 10^{-6})`;
- standardised with the mean and standard deviation of all training-split values (one pair of numbers, like
  MNIST's), so the test split never informs the features.

The result is a :class:`kdtools.data.TensorData` of ``[N, 1, 32, 32]`` float "images" (mel band × frame,
low frequencies first) and ``[N]`` digit labels, usable by every network and loader of the course.
"""
from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import wave
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from ..data import TensorData, default_data_root, sha256

SAMPLE_RATE = 8_000
DURATION_S = 1.0
N_FFT = 256
HOP = 250
N_MELS = 32
N_FRAMES = 32
LOG_FLOOR = 1e-6
TEST_TAKES = range(0, 5)  # the dataset's own test split: takes 0-4 of every digit and speaker
N_RECORDINGS = {"train": 2_700, "test": 300}

FSDD_RELEASE = "v1.0.10"
FSDD_URL = ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/"
            f"{FSDD_RELEASE}.tar.gz")
_CHECKSUMS = Path(__file__).resolve().parent.parent / "data_files" / "FSDD_SHA256SUMS"
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


class FSDDFileError(RuntimeError):
    """A recording is missing or is not the release's file; the message names it and the fix."""


class FSDDNotFoundError(FSDDFileError):
    """The recordings are not there and could not (or must not) be downloaded."""


class Recording(NamedTuple):
    """One FSDD file: its path, the spoken digit, the speaker and the take (0–49)."""

    path: Path
    digit: int
    speaker: str
    take: int


@functools.lru_cache(maxsize=1)
def release_checksums() -> Dict[str, str]:
    """``{file name: sha256}`` of the 3,000 recordings of the release, shipped with kdtools."""
    sums = {}
    for line in _CHECKSUMS.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    return sums


def recordings_dir(root: Optional[os.PathLike] = None) -> Path:
    """``<root>/FSDD/recordings``, with ``root`` defaulting to :func:`kdtools.data.default_data_root`."""
    root = Path(root).expanduser() if root is not None else default_data_root()
    return root / "FSDD" / "recordings"


def parse_name(name: str) -> Tuple[int, str, int]:
    """``"7_jackson_32.wav"`` → ``(7, "jackson", 32)``."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"name must look like '<digit>_<speaker>_<take>.wav', got {name!r}")
    return int(match.group(1)), match.group(2), int(match.group(3))


def list_recordings(train: bool, root: Optional[os.PathLike] = None) -> List[Recording]:
    """The recordings of one split in a fixed order (speaker, digit, take); the files are not opened."""
    folder = recordings_dir(root)
    chosen = []
    for name in release_checksums():
        digit, speaker, take = parse_name(name)
        if (take not in TEST_TAKES) == bool(train):
            chosen.append(Recording(folder / name, digit, speaker, take))
    return sorted(chosen, key=lambda r: (r.speaker, r.digit, r.take))


_VERIFIED: set = set()


def verify_fsdd(root: Optional[os.PathLike] = None) -> None:
    """Check every recording under ``<root>/FSDD/recordings`` against the release's sha256.

    Raises :class:`FSDDFileError` naming up to ten bad files (missing or altered) and the fix. A file that
    passed is not hashed again in this process while its size and modification time stay the same.
    """
    folder = recordings_dir(root)
    problems = []
    for name, digest in release_checksums().items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        actual = sha256(path)
        if actual != digest:
            problems.append(f"{path} is altered: sha256 {actual}, the release's is {digest}")
        else:
            _VERIFIED.add(key)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise FSDDFileError(
            f"FSDD under {folder} is not usable ({len(problems)} of {len(release_checksums())} files):\n{shown}{more}\n"
            f"Fix: replace them by the files of the {FSDD_RELEASE} release ({FSDD_URL}, folder recordings/), or "
            f"point KDTOOLS_DATA at a folder that holds FSDD/recordings/ with all 3,000 original files.")


def _download_archive(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)


def download_fsdd(root: Optional[os.PathLike] = None) -> Path:
    """Download the release archive, unpack its recordings into ``<root>/FSDD/recordings`` and verify them."""
    folder = recordings_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = release_checksums()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "fsdd.tar.gz"
        _download_archive(FSDD_URL, archive)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and Path(member.name).parent.name == "recordings" and name in wanted:
                    source = tar.extractfile(member)
                    with open(folder / name, "wb") as out:
                        shutil.copyfileobj(source, out)
    verify_fsdd(root)
    return folder


def read_wav(path: os.PathLike) -> torch.Tensor:
    """A mono 16-bit PCM wav file at 8 kHz as a float tensor in [-1, 1) ``[samples]``."""
    with wave.open(str(path), "rb") as handle:
        channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
        if (channels, width, rate) != (1, 2, SAMPLE_RATE):
            raise FSDDFileError(f"{path} is not mono 16-bit PCM at {SAMPLE_RATE} Hz: {channels} channel(s), "
                                f"{8 * width}-bit, {rate} Hz")
        frames = handle.readframes(handle.getnframes())
    return torch.frombuffer(bytearray(frames), dtype=torch.int16).float() / 32768.0


def fixed_length(signal: torch.Tensor, samples: int) -> torch.Tensor:
    """``signal`` centred in ``samples`` samples: padded with zeros, or cut, equally at both ends."""
    if signal.dim() != 1:
        raise ValueError(f"signal must be 1-D [samples], got shape {tuple(signal.shape)}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    excess = signal.shape[0] - samples
    if excess >= 0:
        return signal[excess // 2: excess // 2 + samples]
    left = -excess // 2
    return torch.nn.functional.pad(signal, (left, -excess - left))


def _hz_to_mel(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, band edges equally spaced on the HTK mel scale from 0 Hz
    to the Nyquist frequency; filter ``k`` rises from edge ``k`` to a peak of 1 at edge ``k + 1`` and falls to 0
    at edge ``k + 2``."""
    if not isinstance(n_mels, int) or n_mels < 1:
        raise ValueError(f"n_mels must be a positive int, got {n_mels!r}")
    top = _hz_to_mel(sample_rate / 2)
    edges_mel = torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64)
    edges_hz = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def log_mel(signal: torch.Tensor, n_mels: int = N_MELS, n_frames: int = N_FRAMES) -> torch.Tensor:
    """``[n_mels, n_frames]`` log-mel power spectrogram of a 1-D signal at 8 kHz (not standardised)."""
    if signal.dim() != 1:
        raise ValueError(f"signal must be 1-D [samples], got shape {tuple(signal.shape)}")
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    spectrum = torch.stft(signal, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT), center=True,
                          return_complex=True).abs().pow(2)  # [n_fft // 2 + 1, frames]
    if spectrum.shape[1] < n_frames:
        spectrum = torch.nn.functional.pad(spectrum, (0, n_frames - spectrum.shape[1]))
    mel = mel_filterbank(n_mels) @ spectrum[:, :n_frames]
    return torch.log(mel + LOG_FLOOR)


def load_fsdd(train: bool = True, root: Optional[os.PathLike] = None, download: Optional[bool] = None,
              verify: bool = True) -> TensorData:
    """One split of FSDD as standardised log-mel "images" ``[N, 1, 32, 32]`` and digit labels ``[N]``.

    The order is that of :func:`list_recordings` (speaker, digit, take), whose entries give each example's
    speaker and take. root: where ``FSDD/recordings/`` lives (default: :func:`kdtools.data.default_data_root`,
    i.e. ``$KDTOOLS_DATA``). download: ``None`` downloads the release only when files are missing; ``False``
    never downloads. verify: check every file's sha256 first (once per process). Decoded features are cached per
    process; the returned object holds fresh copies.
    """
    folder = recordings_dir(root)
    missing = [name for name in release_checksums() if not (folder / name).is_file()]
    if missing:
        if download is False:
            raise FSDDNotFoundError(_missing_message(folder, missing, "downloading is switched off"))
        try:
            download_fsdd(root)
        except FSDDFileError:
            raise
        except Exception as err:  # no network, a proxy, a full disk: all end the same way for the user
            raise FSDDNotFoundError(_missing_message(folder, missing, f"the download failed "
                                                                     f"({type(err).__name__}: {err})")) from err
    if verify:
        verify_fsdd(root)
    images, labels = _load_cached(bool(train), str(folder.resolve()))
    return TensorData(images.clone(), labels.clone())


@functools.lru_cache(maxsize=2)
def _features(train: bool, folder: str) -> Tuple[torch.Tensor, torch.Tensor]:
    recordings = list_recordings(train, Path(folder).parent.parent)
    samples = int(DURATION_S * SAMPLE_RATE)
    features = torch.stack([log_mel(fixed_length(read_wav(r.path), samples)) for r in recordings])
    return features.unsqueeze(1), torch.tensor([r.digit for r in recordings], dtype=torch.long)


@functools.lru_cache(maxsize=2)
def _load_cached(train: bool, folder: str) -> Tuple[torch.Tensor, torch.Tensor]:
    reference, _ = _features(True, folder)  # standardised with the training split's statistics only
    mean, std = reference.mean(), reference.std()
    features, labels = _features(train, folder)
    return (features - mean) / std, labels


def _missing_message(folder: Path, missing: list, why: str) -> str:
    return (f"FSDD was not found: {folder} lacks {len(missing)} of the {len(release_checksums())} recordings "
            f"(e.g. {missing[0]}), and {why}. Fix: set KDTOOLS_DATA to a folder that holds FSDD/recordings/ with "
            f"the files of the {FSDD_RELEASE} release, or run once with internet access so kdtools can download "
            f"{FSDD_URL}.")


def paired_mnist_indices(audio_labels: torch.Tensor, mnist_labels: torch.Tensor, seed: int) -> torch.Tensor:
    """For every recording, the index of an MNIST image of the same digit (the AV-MNIST pairing).

    For each digit the MNIST images of that digit are shuffled once with a generator seeded by ``seed``, and the
    recordings of that digit, in their order, take them one after the other (cycling if there are more
    recordings than images). So a pairing is reproducible, no image serves twice while unused ones remain, and a
    different seed gives different pairs. Pair training recordings with MNIST training images and test
    recordings with test images, so nothing of the test split is seen in training.
    """
    for tensor, name in ((audio_labels, "audio_labels"), (mnist_labels, "mnist_labels")):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.dtype.is_floating_point:
            raise ValueError(f"{name} must be a 1-D integer tensor, got "
                             f"{tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    paired = torch.empty(len(audio_labels), dtype=torch.long)
    for digit in sorted(set(audio_labels.tolist())):
        pool = torch.nonzero(mnist_labels == digit).flatten()
        if len(pool) == 0:
            raise ValueError(f"mnist_labels has no image of digit {digit}, which audio_labels needs")
        pool = pool[torch.randperm(len(pool), generator=gen)]
        slots = torch.nonzero(audio_labels == digit).flatten()
        paired[slots] = pool[torch.arange(len(slots)) % len(pool)]
    return paired
