"""Audio files in, mono float32 at one rate out: soundfile to read, soxr to resample.

Files are read block by block and resampled as a stream, so a long multi-channel file never
sits in memory at its native rate and width: only the mono result at the target rate does.
Anything a person would have to fix (unreadable, empty, NaN samples, over the limits) raises
`RejectedInput` naming the file and the reason; the pipeline records it and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from datasets.io import RejectedInput, atomic_path, regular_file_size

AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64"}
)
BLOCK_FRAMES = 1 << 16


def find_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every file under `root` with an audio suffix libsndfile reads, sorted by path."""
    root = Path(root)
    # Not `is_file()`: a dangling link, a symlink loop or a FIFO must reach the manifest as a
    # rejected row, not vanish from the listing.
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir()
    )


def _libsndfile_reason(exc: Exception, path: Path) -> str:
    """libsndfile's message without the absolute path (the manifest already names the file),
    so a manifest does not depend on where the corpus lies."""
    return str(exc).replace(f"'{path}'", f"'{path.name}'").replace(str(path), path.name)


def probe_audio(
    path: str | os.PathLike[str],
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
) -> sf._SoundFileInfo:
    """The header of `path`, after the checks that need no decoding; raises `RejectedInput`."""
    path = Path(path)
    size, unreadable = regular_file_size(path)
    if unreadable:
        raise RejectedInput(path, unreadable)
    if size == 0:
        raise RejectedInput(path, "empty file (0 bytes)")
    if max_file_bytes is not None and size > max_file_bytes:
        raise RejectedInput(path, f"file is {size} bytes, over the limit of {max_file_bytes}")
    try:
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise RejectedInput(
            path, f"not readable as audio: {_libsndfile_reason(exc, path)}"
        ) from exc
    if info.frames <= 0:
        raise RejectedInput(path, "no audio frames")
    if max_seconds is not None and info.frames > max_seconds * info.samplerate:
        seconds = info.frames / info.samplerate
        raise RejectedInput(path, f"{seconds:.1f} s long, over the limit of {max_seconds} s")
    return info


def iter_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> Iterator[np.ndarray]:
    """Yield `path` as consecutive mono float32 blocks at `sample_rate`.

    Channels are averaged; the resampler is libsoxr HQ run as a stream (the same output as
    resampling the whole file at once). Raises `RejectedInput` on the first bad block.
    """
    path = Path(path)
    info = probe_audio(path, max_file_bytes, max_seconds)
    resampler = None
    if info.samplerate != sample_rate:
        resampler = soxr.ResampleStream(info.samplerate, sample_rate, 1, "float32", "HQ")
    decoded = 0
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            for block in handle.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                # Checked per channel before mixing: +inf and -inf would average to NaN.
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    bad = decoded + int(np.argmin(finite))
                    raise RejectedInput(path, f"non-finite sample (NaN or inf) at frame {bad}")
                # One channel is already mono: a view, not a mean over one column. Channels are
                # summed in float64: huge but finite float samples overflow a float32 sum to inf.
                mono = (
                    block[:, 0]
                    if block.shape[1] == 1
                    else block.mean(axis=1, dtype=np.float64).astype(np.float32)
                )
                decoded += len(mono)
                yield mono if resampler is None else resampler.resample_chunk(mono)
    except sf.LibsndfileError as exc:
        reason = _libsndfile_reason(exc, path)
        raise RejectedInput(path, f"decoding failed after {decoded} frames: {reason}") from exc
    if decoded == 0:
        raise RejectedInput(path, "no audio frames decode")
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """The whole of `path` as mono float32 at `sample_rate`; raises `RejectedInput`."""
    blocks = list(iter_audio(path, sample_rate, max_file_bytes, max_seconds))
    return np.concatenate(blocks).astype(np.float32, copy=False)


# libsndfile's SFC_SET_ADD_PEAK_CHUNK (sndfile.h); soundfile does not export the constant.
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


@contextmanager
def float_wav_writer(
    path: str | os.PathLike[str], sample_rate: int, durable: bool = True
) -> Iterator[sf.SoundFile]:
    """A mono float32 WAV open for writing, atomically replaced on success (fsynced first
    unless not `durable`: see `datasets.io.atomic_path`).

    libsndfile stamps float WAVs with a PEAK chunk holding the wall-clock time; it is turned
    off so the same samples always give the same bytes.
    """
    with atomic_path(path, durable) as tmp:
        handle = sf.SoundFile(str(tmp), "w", sample_rate, 1, "FLOAT", format="WAV")
        try:
            sf._snd.sf_command(handle._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
            yield handle
        finally:
            _close_unsynced(handle)


def _close_unsynced(handle: sf.SoundFile) -> None:
    """Close a SoundFile open for writing without `SoundFile.close`'s `sf_write_sync`, which
    fsyncs the file (about 4 ms per WAV here): whether and when it is synced is for
    `atomic_path` and the stage to decide. sf_close still writes the final header."""
    if not handle.closed:
        err = sf._snd.sf_close(handle._file)
        handle._file = None
        if err:
            raise sf.LibsndfileError(err, "Error closing the WAV: ")


def convert_to_wav(
    path: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    sample_rate: int,
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
    durable: bool = True,
) -> int:
    """Stream `path` into a mono float32 WAV at `sample_rate` (atomically); return its length."""
    frames = 0
    with float_wav_writer(wav_path, sample_rate, durable) as out:
        for block in iter_audio(path, sample_rate, max_file_bytes, max_seconds):
            out.write(block)
            frames += len(block)
    return frames


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """A mono float32 WAV, written atomically, the same bytes for the same samples."""
    with float_wav_writer(path, sample_rate) as out:
        out.write(np.asarray(samples, dtype=np.float32))
    return Path(path)
