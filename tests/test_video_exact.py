"""Random reads equal a sequential decode in containers whose timestamps mislead.

AVI stores no presentation times (FFmpeg guesses them from the picture types), MPEG-PS
stores them for some pictures only, MPEG-TS seeks on decode times and MPEG-2 GOPs are
open, and DivX-style packed B-frames put two pictures in one packet and a few-byte
placeholder in another. Each kind is made here with PyAV, every frame differs from
every other one, and reads are compared with the sequential decode byte for byte.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from av.bitstream import BitStreamFilterContext

from tcvbm.data import VideoReader, build_dataset
from tcvbm.data.video import decord

from conftest import decode_all, synthetic_frames

NO_DECORD = pytest.mark.skipif(decord is None, reason="decord is not installed")
BACKENDS = ["pyav", pytest.param("decord", marks=NO_DECORD)]
FPS = 30
VOP_START = b"\x00\x00\x01\xb6"
# DivX's user data: 'p' at the end marks packed B-frames (what FFmpeg's decoder looks for).
DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p\x00"

# name: (suffix, codec, encoder options, B-frames, packed, audio); packed: None, or the
# size placeholders are padded to (0: as DivX writes them, a few bytes)
KINDS = {
    "avi-mpeg4": (".avi", "mpeg4", None, 0, None, False),
    "avi-mpeg4-bframes": (".avi", "mpeg4", None, 2, None, False),
    "avi-mpeg4-packed-bframes": (".avi", "mpeg4", None, 2, 0, False),
    "avi-mpeg4-padded-packed-bframes": (".avi", "mpeg4", None, 2, 24, False),
    "avi-mpeg4-bframes-audio": (".avi", "mpeg4", None, 2, None, True),
    "mkv-h264-bframes": (".mkv", "libx264", {"bf": "2"}, 2, None, False),
    "mp4-h264-bframes": (".mp4", "libx264", {"bf": "3"}, 3, None, False),
    "mov-h264-bframes": (".mov", "libx264", {"bf": "2"}, 2, None, False),
    "mpg-mpeg2": (".mpg", "mpeg2video", None, 2, None, False),
    "ts-mpeg2": (".ts", "mpeg2video", None, 2, None, False),
}
# Stream copies of packed AVIs into MKV: a time stored for every packet, yet the times do
# not number the pictures (with padded placeholders, nothing in the packets tells so).
COPIES = {"mkv-mpeg4-packed-bframes": "avi-mpeg4-packed-bframes",
          "mkv-mpeg4-padded-packed-bframes": "avi-mpeg4-padded-packed-bframes"}
KINDS.update({copy: (".mkv", *KINDS[source][1:]) for copy, source in COPIES.items()})


def _vop_type(data: bytes) -> int:
    """MPEG-4 VOP coding type of a packet's first VOP: 0 I, 1 P, 2 B, 3 S."""
    return data[data.index(VOP_START) + 4] >> 6


def _not_coded_vop(reference: bytes) -> bytes:
    """A placeholder VOP (vop_coded = 0) with the time fields of ``reference``'s VOP."""
    start = reference.index(VOP_START) + 4
    bits = "".join(f"{b:08b}" for b in reference[start : start + 8])
    end = 2
    while bits[end] == "1":  # modulo_time_base: one '1' per elapsed second, then '0'
        end += 1
    end += 2 + (FPS - 1).bit_length() + 1  # '0', marker, vop_time_increment, marker
    header = "01" + bits[2:end] + "0"  # P-VOP ... vop_coded = 0
    header += "0" + "1" * ((7 - len(header)) % 8)  # stuffing up to a byte boundary
    return VOP_START + int(header, 2).to_bytes(len(header) // 8, "big")


def _packet(data: bytes, like: av.Packet, dts: int, key: bool) -> av.Packet:
    packet = av.Packet(data)
    packet.dts, packet.pts, packet.time_base, packet.is_keyframe = dts, dts, like.time_base, key
    return packet


def _pack_bframes(packets: list[av.Packet], pad_to: int) -> list[av.Packet]:
    """DivX packing: a reference VOP carries the first B-VOP after it, the rest of the B run
    moves up one packet, and a not-coded VOP (zero bytes appended up to ``pad_to``) fills
    the freed slot: one packet per frame."""
    out: list[av.Packet] = []
    i = 0
    while i < len(packets):
        j = i + 1
        while j < len(packets) and _vop_type(bytes(packets[j])) == 2:
            j += 1
        if j == i + 1:
            out.append(packets[i])
        else:
            ref, bvops = bytes(packets[i]), [bytes(p) for p in packets[i + 1 : j]]
            chunks = [ref + bvops[0], *bvops[1:], _not_coded_vop(ref).ljust(pad_to, b"\0")]
            out += [_packet(c, packets[i], packets[i + k].dts, k == 0 and packets[i].is_keyframe)
                    for k, c in enumerate(chunks)]
        i = j
    first = bytes(out[0])
    at = first.index(VOP_START)
    out[0] = _packet(first[:at] + DIVX_PACKED_USER_DATA + first[at:], out[0], out[0].dts, True)
    return out


def _copy_stream(src: Path, dst: Path, skip: int = 0, placeholder_after: int | None = None) -> Path:
    """Copy the video packets of ``src`` into the container of ``dst`` (``ffmpeg -c copy``).

    ``skip``: leave out the first packets (a cut that does not start at a keyframe).
    ``placeholder_after``: add an MPEG-4 drop-frame placeholder (a not-coded VOP) after
    that packet, in a frame slot of its own: packets are given consecutive times, which
    keeps them in order only without B-frames.
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size][skip:]
        if placeholder_after is not None:
            vop = _not_coded_vop(bytes(packets[placeholder_after]))
            packets.insert(placeholder_after + 1, _packet(vop, packets[0], 0, False))
            for t, packet in enumerate(packets):
                packet.pts = packet.dts = t
        for packet in packets:
            packet.stream = copy
            out.mux(packet)
    return dst


def encode(path: Path, kind: str, gop: int, n: int = 30, seed: int = 0) -> Path:
    """Encode ``n`` distinct 64x48 frames as ``kind`` (see KINDS) with a keyframe every ``gop``."""
    suffix, codec, options, bframes, packed, audio = KINDS[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in COPIES:
        source = path.with_name(path.stem + "-source.avi")
        return _copy_stream(encode(source, COPIES[kind], gop, n, seed), path)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.gop_size = gop
        video.codec_context.max_b_frames = bframes
        if options:
            video.options = options
        sound = out.add_stream("pcm_s16le", rate=8000, layout="mono") if audio else None
        packets = []
        for i, array in enumerate(synthetic_frames(n, 48, 64, seed)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            packets += video.encode(frame)
        packets += video.encode(None)
        if packed is not None:
            packets = _pack_bframes(packets, packed)
        per_frame = 8000 // FPS
        for i, packet in enumerate(packets):
            packet.stream = video
            out.mux(packet)
            if sound is not None:  # interleaved, as in camera files
                silence = np.zeros((1, per_frame), np.int16)
                samples = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
                samples.sample_rate, samples.pts = 8000, i * per_frame
                out.mux(sound.encode(samples))
        if sound is not None:
            out.mux(sound.encode(None))
    return path


def assert_reads_exact(path: Path, backend: str, seed: int = 0) -> None:
    ref = decode_all(path)
    n = len(ref)
    rng = np.random.default_rng(seed)
    with VideoReader(path, backend=backend) as r:
        assert len(r) == n and r.size == ref.shape[1:3]
        assert len(r.timestamps) == n and np.all(np.diff(r.timestamps) > 0)
        for _ in range(4):  # out of order, with repeats
            idx = rng.integers(0, n, 12).tolist()
            assert np.array_equal(r.read(idx).numpy(), ref[idx]), (backend, r.backend, idx)
        backwards = list(range(n))[::-1]
        assert np.array_equal(r.read(backwards).numpy(), ref[backwards]), (backend, r.backend)
        for i in rng.permutation(n).tolist():  # one frame per call: a new seek each time
            assert np.array_equal(r.read([i])[0].numpy(), ref[i]), (backend, r.backend, i)
        count = min(8, (n - 2) // 3 + 1)
        assert np.array_equal(r.read_clip(1, count, stride=3).numpy(), ref[1 : 3 * count - 1 : 3])
    # Readers that know nothing of the file yet (indexes are kept per path): the first
    # read of each is one frame, which no decoded picture before it can vouch for.
    for i in range(n):
        copy = path.with_name(f"{path.stem}-first-read-{i}{path.suffix}")
        shutil.copyfile(path, copy)
        assert np.array_equal(VideoReader(copy, backend=backend).read([i])[0].numpy(), ref[i]), i


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gop", [3, 12])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_random_reads_equal_sequential_decode(tmp_path, kind, gop, backend):
    path = encode(tmp_path / f"v{KINDS[kind][0]}", kind, gop)
    ref = decode_all(path)
    assert len(ref) == 30 and len({f.tobytes() for f in ref}) == 30  # every frame differs
    assert_reads_exact(path, backend)


@pytest.mark.parametrize("gop", [3, 12])
@pytest.mark.parametrize("kind", sorted(k for k in KINDS if "packed" not in k and "mpg" not in k))
def test_well_behaved_files_keep_seeking(tmp_path, caplog, kind, gop):
    """Stored times are trusted where they hold, and no keyframe is given up: random reads
    stay seek-and-decode (AVI is numbered by one decode, as it stores no times)."""
    path = encode(tmp_path / f"v{KINDS[kind][0]}", kind, gop)
    caplog.set_level(logging.DEBUG, logger="tcvbm.data")
    r = VideoReader(path, backend="pyav")
    for i in np.random.default_rng(0).permutation(len(r)).tolist():
        r.read([i])
    messages = [rec.getMessage() for rec in caplog.records if rec.name.startswith("tcvbm.data")]
    decoded = [m for m in messages if "numbered by decoding it once" in m]
    assert len(decoded) == (path.suffix == ".avi") and len(messages) == len(decoded), messages


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,skip", [("ts-mpeg2", 1), ("mkv-h264-bframes", 2),
                                       ("mp4-h264-bframes", 4)])
def test_stream_copy_cut_mid_gop(tmp_path, kind, skip, backend):
    """A copy that starts after a keyframe: the decoder drops the pictures before the next
    one, which the stored times still number."""
    suffix = KINDS[kind][0]
    source = encode(tmp_path / f"source{suffix}", kind, gop=12)
    path = _copy_stream(source, tmp_path / f"cut{suffix}", skip)
    assert len(decode_all(path)) < 30 - skip
    assert_reads_exact(path, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_placeholder_packet_with_a_stored_time(tmp_path, backend):
    """A drop-frame placeholder copied into MKV keeps a time of its own but shows no
    picture: stored times would number every frame after it one too high."""
    source = encode(tmp_path / "source.avi", "avi-mpeg4", gop=12)
    path = _copy_stream(source, tmp_path / "dropped.mkv", placeholder_after=5)
    with av.open(str(path)) as c:
        assert sum(1 for p in c.demux(video=0) if p.size) == 31
    assert len(decode_all(path)) == 30
    assert_reads_exact(path, backend)


def test_packed_fixture_is_divx_packing(tmp_path):
    """The packed file is what FFmpeg calls packed: its unpacking filter restores the
    encoder's packets, and both files decode to the same pictures."""
    packed = encode(tmp_path / "packed.avi", "avi-mpeg4-packed-bframes", gop=12)
    plain = encode(tmp_path / "plain.avi", "avi-mpeg4-bframes", gop=12)
    with av.open(str(packed)) as c:
        stream = c.streams.video[0]
        unpack = BitStreamFilterContext("mpeg4_unpack_bframes", stream)
        sizes = [p.size for p in c.demux(stream) if p.size]
        c.seek(0, stream=stream)
        unpacked = [bytes(q) for p in c.demux(stream) if p.size for q in unpack.filter(p)]
        unpacked += [bytes(q) for q in unpack.filter(None)]
    with av.open(str(plain)) as c:
        encoded = [bytes(p) for p in c.demux(video=0) if p.size]
    assert len(sizes) == 30 and sum(s < 20 for s in sizes) >= 5  # placeholders: a few bytes
    assert unpacked[1:] == encoded[1:]  # the first differs only in the DivX user data
    assert np.array_equal(decode_all(packed), decode_all(plain))


def test_fallback_is_said_once_at_debug_level(tmp_path, caplog):
    path = encode(tmp_path / "packed.avi", "avi-mpeg4-packed-bframes", gop=3)
    caplog.set_level(logging.DEBUG, logger="tcvbm.data")
    r = VideoReader(path, backend="pyav")
    for i in [29, 0, 14, 15, 3, 27, 1]:
        r.read([i])
    records = [rec for rec in caplog.records if rec.name.startswith("tcvbm.data")]
    assert records and all(rec.levelno == logging.DEBUG for rec in records)
    messages = [rec.getMessage() for rec in records]
    assert len(messages) == len(set(messages)) and all(str(path) in m for m in messages)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_ucf101_layout_of_bframe_avi_clips_are_exact(tmp_path, backend):
    root = tmp_path / "ucf"
    names = []
    for c, (cls, kind) in enumerate([("ApplyEyeMakeup", "avi-mpeg4-bframes-audio"),
                                     ("Archery", "avi-mpeg4-packed-bframes")]):
        for g in (1, 2):
            name = f"{cls}/v_{cls}_g0{g}_c01.avi"
            encode(root / "UCF-101" / name, kind, gop=3 + 5 * (g - 1), seed=10 * c + g)
            names.append((name, c + 1))
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("".join(f"{name} {label}\n" for name, label in names))
    (lists / "testlist01.txt").write_text(f"{names[0][0]}\n")
    refs = [decode_all(root / "UCF-101" / name) for name, _ in names]
    ds = build_dataset(root, num_frames=8, size=(48, 64), split="train", stride=2,
                       clips_per_video=3, crop="center", output="uint8", shuffle=False,
                       backend=backend, cache_dir=tmp_path / "cache")
    assert type(ds).__name__ == "UCF101" and ds.stats()["usable"] == 4
    for epoch in range(3):
        ds.set_epoch(epoch)
        clips = [clip.numpy() for clip in ds]
        assert len(clips) == 12
        for clip in clips:  # each clip is 8 frames, every 2nd, of one video's sequential decode
            runs = [ref[s : s + 15 : 2] for ref in refs for s in range(len(ref) - 14)]
            assert any(np.array_equal(clip, run) for run in runs)
        assert ds.stats()["skipped"] == 0  # no video was given up as unreadable


def test_static_h264_is_numbered_from_stored_times(tmp_path, caplog):
    """A still H.264 clip codes most frames in a few bytes: tiny packets are pictures there
    (placeholders exist only in MPEG-4 Part 2), so the stored times number the frames, and
    a damaged stretch stays readable around it instead of failing the whole index."""
    path = tmp_path / "still.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")
        for _ in range(20):
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert min(p.size for p in c.demux(video=0) if p.size) <= 19
    caplog.set_level(logging.DEBUG, logger="tcvbm.data")
    assert len(VideoReader(str(path), backend="pyav")) == 20
    assert not [r for r in caplog.records if "numbered by decoding" in r.getMessage()]
