"""kdtools.paradigms.audio: FSDD features, file checks, the download path (mocked) and the pairing with MNIST."""
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from kdtools.paradigms import audio

LOCAL = audio.recordings_dir()
needs_fsdd = pytest.mark.skipif(not all((LOCAL / n).is_file() for n in list(audio.release_checksums())[:3]),
                                reason="FSDD is not under KDTOOLS_DATA")


def test_the_shipped_checksums_list_the_whole_release():
    sums = audio.release_checksums()
    assert len(sums) == 3000
    parsed = [audio.parse_name(name) for name in sums]
    assert {d for d, _, _ in parsed} == set(range(10)) and len({s for _, s, _ in parsed}) == 6
    assert {t for _, _, t in parsed} == set(range(50))


def test_parse_name_reads_digit_speaker_take_and_refuses_other_names():
    assert audio.parse_name("7_jackson_32.wav") == (7, "jackson", 32)
    with pytest.raises(ValueError, match="name must look like"):
        audio.parse_name("jackson_7.wav")


def test_the_dataset_split_keeps_takes_0_to_4_for_testing_and_no_recording_in_both():
    train, test = audio.list_recordings(True), audio.list_recordings(False)
    assert len(train) == audio.N_RECORDINGS["train"] and len(test) == audio.N_RECORDINGS["test"]
    assert {r.take for r in test} == set(range(5)) and min(r.take for r in train) == 5
    assert not {(r.speaker, r.digit, r.take) for r in train} & {(r.speaker, r.digit, r.take) for r in test}
    assert {r.speaker for r in train} == {r.speaker for r in test}  # the split is by take, not by speaker


def test_fixed_length_centres_pads_and_cuts_equally_at_both_ends():
    signal = torch.arange(1.0, 6.0)
    assert audio.fixed_length(signal, 9).tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert audio.fixed_length(signal, 3).tolist() == [2, 3, 4]
    assert audio.fixed_length(signal, 5).tolist() == signal.tolist()
    with pytest.raises(ValueError, match="samples must be a positive int, got 0"):
        audio.fixed_length(signal, 0)
    with pytest.raises(ValueError, match=r"signal must be 1-D \[samples\], got shape \(1, 5\)"):
        audio.fixed_length(signal[None], 5)


def test_mel_filterbank_peaks_at_the_hand_computed_band_edges():
    bank = audio.mel_filterbank()
    assert bank.shape == (32, audio.N_FFT // 2 + 1) and bool((bank >= 0).all()) and bool((bank.sum(1) > 0).all())
    # HTK mel of 4 kHz is 2595·log10(1 + 4000/700) = 2146.06; 34 equally spaced edges -> spacing 65.03 mel.
    spacing = 2595 * math.log10(1 + 4000 / 700) / 33
    centre_hz = [700 * (10 ** ((k + 1) * spacing / 2595) - 1) for k in range(32)]
    freqs = torch.linspace(0, 4000, audio.N_FFT // 2 + 1)
    for k in (0, 10, 31):  # each filter's largest weight sits on the FFT bin nearest its centre frequency
        nearest = int((freqs - centre_hz[k]).abs().argmin())
        assert int(bank[k].argmax()) == nearest


def test_a_pure_tone_lights_up_the_mel_band_around_its_frequency():
    # 1 kHz is 999.99 mel; band centres lie at (k + 1)·65.03 mel, so the nearest is k = 14 (975.4 mel).
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / 8000)
    spectrogram = audio.log_mel(tone)
    assert spectrogram.shape == (32, 32)
    assert int(spectrogram.mean(1).argmax()) == 14
    silence = audio.log_mel(torch.zeros(8000))
    assert torch.allclose(silence, torch.full_like(silence, math.log(audio.LOG_FLOOR)))


def test_read_wav_refuses_files_in_another_format(tmp_path):
    import wave
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2), handle.setsampwidth(2), handle.setframerate(8000)
        handle.writeframes(b"\x00\x00" * 20)
    with pytest.raises(audio.FSDDFileError, match="2 channel"):
        audio.read_wav(path)


def test_missing_files_raise_without_downloading_when_download_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_download_archive", lambda *a: pytest.fail("must not download"))
    with pytest.raises(audio.FSDDNotFoundError, match="lacks 3000 of the 3000 recordings.*switched off"):
        audio.load_fsdd(True, root=tmp_path, download=False)


def test_a_failed_download_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    def offline(url, destination):
        raise OSError("Name or service not known")
    monkeypatch.setattr(audio, "_download_archive", offline)
    with pytest.raises(audio.FSDDNotFoundError, match=r"FSDD/recordings.*download failed \(OSError.*KDTOOLS_DATA"):
        audio.load_fsdd(True, root=tmp_path)


@needs_fsdd
def test_download_unpacks_the_release_archive_and_verifies_it(tmp_path, monkeypatch):
    import tarfile

    def fake_release(url, destination):  # the release's layout: <repo>-<tag>/recordings/*.wav
        assert url == audio.FSDD_URL
        with tarfile.open(destination, "w:gz") as tar:
            tar.add(LOCAL, arcname="free-spoken-digit-dataset-1.0.10/recordings")
    monkeypatch.setattr(audio, "_download_archive", fake_release)
    folder = audio.download_fsdd(tmp_path)
    assert folder == tmp_path / "FSDD" / "recordings" and len(list(folder.glob("*.wav"))) == 3000


@needs_fsdd
def test_an_altered_recording_is_named_with_its_checksum(tmp_path):
    folder = tmp_path / "FSDD" / "recordings"
    folder.mkdir(parents=True)
    for name in audio.release_checksums():
        os.symlink(LOCAL / name, folder / name)
    victim = folder / "3_theo_7.wav"
    victim.unlink()
    data = bytearray((LOCAL / "3_theo_7.wav").read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    (folder / "0_george_0.wav").unlink()
    with pytest.raises(audio.FSDDFileError) as error:
        audio.verify_fsdd(tmp_path)
    message = str(error.value)
    assert "2 of 3000 files" in message and "3_theo_7.wav is altered: sha256" in message
    assert "0_george_0.wav is missing" in message and "KDTOOLS_DATA" in message


@needs_fsdd
def test_load_fsdd_gives_standardised_32x32_images_with_the_file_names_labels():
    train, test = audio.load_fsdd(True), audio.load_fsdd(False)
    assert train.images.shape == (2700, 1, 32, 32) and test.images.shape == (300, 1, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.long
    assert abs(train.images.mean().item()) < 1e-4 and abs(train.images.std().item() - 1) < 1e-4
    assert train.labels.tolist() == [r.digit for r in audio.list_recordings(True)]
    assert torch.bincount(test.labels).tolist() == [30] * 10
    # the same recording decoded again gives the same features; a copy is returned, not the cache
    first = audio.load_fsdd(False)
    first.images.zero_()
    assert torch.equal(audio.load_fsdd(False).images, test.images)


def test_pairing_gives_images_of_the_same_digit_reproducibly():
    audio_labels = torch.tensor([0, 1, 1, 2, 0, 1, 1])
    mnist_labels = torch.tensor([1, 0, 1, 2, 0, 1, 2, 0])
    paired = audio.paired_mnist_indices(audio_labels, mnist_labels, seed=0)
    assert torch.equal(mnist_labels[paired], audio_labels)
    assert torch.equal(paired, audio.paired_mnist_indices(audio_labels, mnist_labels, seed=0))
    # three images of digit 1 for four recordings: all three are used before one repeats
    ones = paired[audio_labels == 1].tolist()
    assert set(ones) == {0, 2, 5} and ones[3] == ones[0]
    many = torch.arange(10).repeat(50)
    pool = torch.arange(10).repeat(100)
    assert not torch.equal(audio.paired_mnist_indices(many, pool, seed=0), audio.paired_mnist_indices(many, pool, seed=1))


def test_pairing_refuses_bad_input_by_name():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="mnist_labels has no image of digit 1"):
        audio.paired_mnist_indices(labels, torch.tensor([0, 0]), seed=0)
    with pytest.raises(ValueError, match="audio_labels must be a 1-D integer tensor, got \\(2,\\)"):
        audio.paired_mnist_indices(labels.float(), labels, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        audio.paired_mnist_indices(labels, labels, seed=-1)


@needs_fsdd
def test_kdtools_data_loads_fsdd_like_mnist():
    from kdtools.data import load_fsdd
    test = load_fsdd(train=False, download=False)
    assert test.images.shape == (300, 1, 32, 32) and torch.equal(test.labels, audio.load_fsdd(False).labels)
