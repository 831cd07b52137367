"""Real recordings from Debian and npm packages: fetched once, checked, deduplicated, grouped.

The packages here are small ones built in the test in the real formats (a .deb by dpkg-deb, an
npm .tgz), with recordings whose faults are known: band-limited, clipped, too short, a copy.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import datasets.audio.recordings as recordings
from datasets.audio.corpus import audio_corpus, corpus_parts
from datasets.audio.recordings import (
    SOURCES,
    FetchError,
    RecordingSource,
    check_recording,
    fetch_source,
    recordings_corpus,
    select_recordings,
)
from flows.audio import AudioParams
from models.audio.config import QUICK_LIMIT
from tasks.audio import split_task

RATE = 44100


def noise(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Full-band noise with a speech-like tilt (louder lows), peak 0.5."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    x = signal.lfilter([1.0], [1.0, -0.9], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def lowpassed(x: np.ndarray, cutoff: float, rate: int = RATE) -> np.ndarray:
    sos = signal.cheby2(12, 80, cutoff, fs=rate, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def test_a_recording_is_truth_only_when_clean_and_full_band():
    assert check_recording(noise(2, 0), RATE) is None
    assert check_recording(np.stack([noise(2, 0), noise(2, 1)], axis=1), RATE) is None
    assert "band-limited below 8 kHz" in check_recording(lowpassed(noise(2, 0), 7300), RATE)
    assert check_recording(lowpassed(noise(2, 0), 9500), RATE) is None  # a cut above 8 kHz is fine
    assert "clipped" in check_recording(np.clip(noise(2, 0) * 4, -1, 1), RATE)
    assert "under 0.5 s" in check_recording(noise(0.2, 0), RATE)
    assert "below 16000 Hz" in check_recording(noise(2, 0, 8000), 8000)
    assert check_recording(np.zeros(RATE, np.float32), RATE) == "silent above 6 kHz"


def write_package_tree(root: Path) -> None:
    """A tuxpaint-like tree: descriptions in two languages, one Greek-like band-limited, one
    clipped, one copy of another under a second name, one sound effect that is not speech."""
    stamps = root / "usr" / "share" / "tuxpaint" / "stamps"
    files = {
        "animals/cat_desc_ro.ogg": noise(1.5, 1),
        "animals/dog_desc_ro.ogg": noise(1.5, 2),
        "shapes/star_desc_ro.ogg": noise(1.5, 3),
        "christmas/star_desc_ro.ogg": noise(1.5, 3),  # the same recording again
        "animals/cat_desc_da.ogg": noise(1.5, 4),
        "animals/dog_desc_da.ogg": np.clip(noise(1.5, 5) * 4, -1, 1),
        "animals/cat_desc_bg.ogg": lowpassed(noise(1.5, 6), 7300),
        "animals/dog_desc_el.ogg": noise(1.5, 8),  # Greek: band-limited at the source
        "animals/cat.ogg": noise(1.5, 7),  # a sound effect: not a description
    }
    for name, samples in files.items():
        path = stamps / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), samples, RATE, format="OGG", subtype="VORBIS")
    (stamps / "animals" / "owl_desc_ro.ogg").write_bytes(b"OggS" + bytes(100))  # truncated


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not here")
    build = tmp_path_factory.mktemp("deb")
    tree = build / "pkg"
    write_package_tree(tree)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        "Package: tuxpaint-stamps-default\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test <test@example.org>\nDescription: test stamps\n"
    )
    out = build / "tuxpaint-stamps-default_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(out)], check=True, capture_output=True)
    return out


def test_a_package_is_unpacked_once_and_its_recordings_checked(deb, tmp_path):
    source = SOURCES["tuxpaint"]
    tree = fetch_source(source, tmp_path, archive=deb)
    assert tree == tmp_path / "tuxpaint" / "tree"
    assert fetch_source(source, tmp_path) == tree  # no second fetch: the tree is there
    found = {
        PurePosixPath(r.path.relative_to(tree).as_posix()).name: r
        for r in select_recordings(source, tree, set())
    }
    assert "cat.ogg" not in found  # not a spoken description
    assert "dog_desc_el.ogg" not in found
    statuses = {(r.path.parent.name, name): r.status for name, r in found.items()}
    assert statuses[("animals", "cat_desc_ro.ogg")] == "ok"
    assert "band-limited" in found["cat_desc_bg.ogg"].reason
    assert "clipped" in found["dog_desc_da.ogg"].reason
    assert "does not decode" in found["owl_desc_ro.ogg"].reason
    stars = sorted(
        (r.path.parent.name, r.status)
        for r in select_recordings(source, tree, set())
        if r.path.name == "star_desc_ro.ogg"
    )
    assert stars == [("christmas", "ok"), ("shapes", "duplicate")]  # path order, one kept
    assert {r.group for r in found.values()} == {"tuxpaint-ro", "tuxpaint-da", "tuxpaint-bg"}


def test_an_npm_package_unpacks_without_escaping_its_directory(tmp_path):
    payload = tmp_path / "payload"
    (payload / "package" / "samples").mkdir(parents=True)
    sf.write(str(payload / "package" / "samples" / "hat_a.flac"), noise(1, 9), RATE)
    archive = tmp_path / "supersonic-scsynth-samples-0.84.2.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload / "package", arcname="package")
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 0
        tar.addfile(evil)
    with pytest.raises(tarfile.OutsideDestinationError):
        fetch_source(SOURCES["scsynth"], tmp_path / "cache", archive=archive)
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    assert not (tmp_path / "cache" / "scsynth" / "tree").exists()  # nothing half-unpacked kept


def test_the_corpus_is_a_directory_of_groups_and_the_split_keeps_them_whole(deb, tmp_path):
    """recordings-speech as the audio flow sees it: files under their group's directory, the
    refused ones as manifest rows with the reason, and a split by directory."""
    fillets = tmp_path / "fillets.deb"
    tree = tmp_path / "fillets-pkg"
    for seed, level in enumerate(("level1", "level2", "cabin1", "cabin2")):
        path = tree / "usr/share/games/fillets-ng/sound" / level / "cs" / f"{level}-v-hello.ogg"
        path.parent.mkdir(parents=True)
        sf.write(str(path), noise(1.0, 20 + seed), 22050, format="OGG", subtype="VORBIS")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        "Package: fillets-ng-data-cs\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test <test@example.org>\nDescription: test\n"
    )
    subprocess.run(
        ["dpkg-deb", "--build", str(tree), str(fillets)], check=True, capture_output=True
    )
    archives = {"tuxpaint": deb, "fillets": fillets}
    root, files, checked = recordings_corpus("speech", tmp_path / "data", archives)
    groups = {f.relative_to(root).parts[0] for f in files}
    assert groups == {
        "tuxpaint-ro",
        "tuxpaint-da",
        "fillets-level1",
        "fillets-level2",
        "fillets-cabin",  # cabin1 and cabin2 are one ship
    }
    assert len(files) == 8
    assert sum(r.status != "ok" for r in checked) == 4
    corpus = audio_corpus("recordings-speech", tmp_path / "data", 16000)
    assert corpus.paths == files
    reasons = {row["path"]: row["reason"] for row in corpus.refused}
    assert "band-limited" in reasons["tuxpaint:cat_desc_bg.ogg"]
    records = [
        {"file_id": str(i), "path": f.relative_to(root).as_posix(), "status": "ok"}
        for i, f in enumerate(files)
    ]
    splits = split_task.fn(records, 0, 0.2, 0.2, by_dir=True)
    by_group: dict[str, set[str]] = {}
    for record in records:
        by_group.setdefault(record["path"].split("/")[0], set()).add(splits[record["file_id"]])
    assert all(len(assigned) == 1 for assigned in by_group.values())
    assert set(splits.values()) == {"train", "valid", "test"}


def test_a_package_that_cannot_be_fetched_names_the_command(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not here")
    missing = RecordingSource("nothing", "apt", "genaudio-no-such-package", "none", lambda p: None)
    with pytest.raises(
        FetchError, match=r"apt-get download genaudio-no-such-package.*apt-get update"
    ):
        fetch_source(missing, tmp_path)


def test_the_recordings_split_by_directory_unless_told_otherwise():
    assert AudioParams(corpus="recordings-speech").splits_by_dir()
    assert not AudioParams(corpus="recordings-music", split_by="file").splits_by_dir()
    assert not AudioParams().splits_by_dir()  # the renders: each file on its own
    assert AudioParams(split_by="dir").splits_by_dir()


def test_a_mix_splits_by_directory_when_any_part_is_recordings_and_limits_each_built_in():
    assert AudioParams(corpus="bach+recordings-speech").splits_by_dir()
    assert not AudioParams(corpus="bach+bytebeat").splits_by_dir()
    assert AudioParams(corpus="recordings-music+bach").corpus_limit() == QUICK_LIMIT
    assert AudioParams(corpus="bach+/my/recordings").corpus_limit() is None  # a user's: whole
    assert corpus_parts("recordings-speech+/my/recordings") == [
        "recordings-speech",
        "/my/recordings",
    ]
    with pytest.raises(ValueError, match="distinct"):
        corpus_parts("bach+/elsewhere/bach")
    with pytest.raises(ValueError, match="distinct"):
        corpus_parts("bach+")


def test_the_checks_are_kept_beside_the_tree_and_redone_when_the_code_changes(
    deb, tmp_path, monkeypatch
):
    source = SOURCES["tuxpaint"]
    tree = fetch_source(source, tmp_path, archive=deb)
    first = select_recordings(source, tree, set())
    assert (tree.parent / recordings.CHECKED_FILE).is_file()

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(recordings, "_check_file", no_decoding)
        assert select_recordings(source, tree, set()) == first  # from checked.json
        patch.setattr(recordings, "code_version", lambda *modules: "another version")
        with pytest.raises(AssertionError, match="decoded again"):
            select_recordings(source, tree, set())
    (tree.parent / recordings.CHECKED_FILE).write_text('{"version": "')  # damaged: redone
    assert select_recordings(source, tree, set()) == first
