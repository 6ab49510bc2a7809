"""The video benchmarks' split readers on miniature layouts of the datasets' own files, with real
(tiny) videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.video_files import write_video

from awt.classes import read_class_file
from awt.bench.video_datasets import (VIDEO_READERS, k600_test_classes, read_hmdb51, read_k600_zsl,
                                      read_ucf101, ucf101_name)
from awt.errors import AWTError
from awt.videos import sample_video
from awt.video_sampling import VideoSampling

CLASSNAMES = Path(__file__).resolve().parents[2] / "benchmarks" / "classnames" / "video"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """One real tiny video; the layouts link to it."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", 12, 25, 32, 32)


def _place(clip: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(clip, path)


def test_ucf101_official_lists(clip, tmp_path):
    root = tmp_path / "ucf101"
    folders = ["ApplyEyeMakeup", "Basketball", "HandstandPushups", "YoYo"]
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("".join(f"{i} {f}\r\n" for i, f in enumerate(folders, 1)))
    for split, groups in [(1, ("g01", "g02")), (2, ("g03",)), (3, ("g04",))]:
        rel = [f"{f}/v_{f}_{g}_c01.avi" for f in folders[::-1] for g in groups]
        (root / "ucfTrainTestlist" / f"testlist0{split}.txt").write_text("\n".join(rel) + "\n")
        for r in rel:
            _place(clip, root / "UCF-101" / r)
    data = read_ucf101(root, 1)
    assert data.classnames == ["Apply Eye Makeup", "Basketball", "Handstand Pushups", "Yoyo"]
    assert data.labels == [3, 3, 2, 2, 1, 1, 0, 0] and data.extra == {"split": 1} and data.format == "ucf101"
    assert data.paths[0] == str(root / "UCF-101" / "YoYo" / "v_YoYo_g01_c01.avi")
    assert len(read_ucf101(root, 2)) == 4 and read_ucf101(root, 3).paths[-1].endswith("v_ApplyEyeMakeup_g04_c01.avi")
    assert ucf101_name("PlayingDaf") == "Playing Daf" and VIDEO_READERS["ucf101"] is read_ucf101
    # a listed video that is missing, a split that does not exist, a list naming an unknown class
    os.remove(root / "UCF-101" / "Basketball" / "v_Basketball_g03_c01.avi")
    with pytest.raises(AWTError, match=r"testlist02.txt: 1 of 4 listed videos are missing, such as .*Basketball_g03"):
        read_ucf101(root, 2)
    with pytest.raises(AWTError, match="split must be 1, 2 or 3"):
        read_ucf101(root, 4)
    (root / "ucfTrainTestlist" / "testlist03.txt").write_text("Surfing/v_Surfing_g01_c01.avi\n")
    with pytest.raises(AWTError, match=r"testlist03.txt:1: class folder 'Surfing' is not in classInd.txt"):
        read_ucf101(root, 3)
    os.remove(root / "ucfTrainTestlist" / "classInd.txt")
    with pytest.raises(AWTError, match=r"classInd.txt not found: UCF101's class index"):
        read_ucf101(root, 1)


def test_hmdb51_split_marks(clip, tmp_path):
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    marks = {"brush_hair": ["1", "2", "0", "2"], "kick_ball": ["2", "1", "1", "0"], "climb_stairs": ["0", "2", "2", "2"]}
    for name, column in marks.items():
        for split in (1, 2, 3):
            shifted = column[split - 1 :] + column[: split - 1]
            lines = [f"{name}_video_{k}.avi {m} " for k, m in enumerate(shifted)]
            (splits / f"{name}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
        for k in range(4):
            _place(clip, root / "hmdb51_org" / name / f"{name}_video_{k}.avi")
    data = read_hmdb51(root, 1)
    assert data.classnames == ["brush hair", "climb stairs", "kick ball"]
    assert [Path(p).name for p in data.paths] == ["brush_hair_video_1.avi", "brush_hair_video_3.avi",
                                                  "climb_stairs_video_1.avi", "climb_stairs_video_2.avi",
                                                  "climb_stairs_video_3.avi", "kick_ball_video_0.avi"]
    assert data.labels == [0, 0, 1, 1, 1, 2]
    assert [len(read_hmdb51(root, s)) for s in (2, 3)] == [6, 6] and read_hmdb51(root, 2).labels == [0, 0, 1, 1, 1, 2]
    assert read_hmdb51(root, 1, classnames=_names(tmp_path, ["Brush hair", "Climb stairs", "Kick ball"])).classnames[0] == "Brush hair"
    (splits / "kick_ball_test_split1.txt").write_text("kick_ball_video_0.avi 7\n")
    with pytest.raises(AWTError, match=r"kick_ball_test_split1.txt:1: expected '<video> <0\|1\|2>'"):
        read_hmdb51(root, 1)
    with pytest.raises(AWTError, match=r"no HMDB51 split files \*_test_split2.txt"):
        read_hmdb51(tmp_path / "elsewhere", 2)


def _names(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def test_k600_zero_shot_protocol(clip, tmp_path):
    root = tmp_path / "k600"
    words = ["abseiling", "air drumming", "acting in play", "backflip (human)", "zumba", "arguing"]  # 2.. are "new"
    resource = root / "resource"
    resource.mkdir(parents=True)
    (resource / "classes620_label_defn.json").write_text(json.dumps([{"word": w, "defn": "."} for w in words]))
    (resource / "tst_class_idxs.json").write_text(json.dumps([[4, 2, 3], [5, 2, 4], [3, 5, 4]]))
    for word in words[2:]:
        for k in range(2):
            _place(clip, root / "val" / word.replace(" ", "_") / f"{k}_000001_000011.mp4")
    (root / "val" / "zumba" / "notes.txt").write_text("not a video")
    data = read_k600_zsl(root, 1)
    assert data.classnames == ["acting in play", "backflip (human)", "zumba"] and data.labels == [0, 0, 1, 1, 2, 2]
    assert data.paths[2] == str(root / "val" / "backflip_(human)" / "0_000001_000011.mp4")
    assert k600_test_classes(root, 2) == ["acting in play", "arguing", "zumba"]
    # the shipped class files: 160 test classes per split, sorted, in every split's label order
    shipped = [read_class_file(CLASSNAMES / f"k600_split{s}.txt") for s in (1, 2, 3)]
    assert all(len(n) == len(set(n)) == 160 and n == sorted(n) for n in shipped)
    assert len(set().union(*shipped)) == 217   # the AWT authors describe exactly these 217 of the 220
    (root / "val" / "arguing").rename(root / "val" / "arguing-renamed")
    with pytest.raises(AWTError, match=r"no folder for class 'arguing' \(arguing/\)"):
        read_k600_zsl(root, 3)
    with pytest.raises(AWTError, match=r"val: no class file for the Kinetics-600 split, and ER-ZSAR's protocol files"):
        read_k600_zsl(root / "val", 1)
    # a listed video is a real one: it decodes
    assert sample_video(data.paths[0], VideoSampling(), 32).info.frames == 12
