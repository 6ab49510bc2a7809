"""The descriptions file format: plain AWT/CuPL JSON and the `awt describe` cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from awt.descriptions import (
    FILE_FORMAT,
    DescriptionSet,
    load_descriptions,
    normalize_name,
    save_descriptions,
)
from awt.errors import AWTError, DescriptionsError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "descriptions"


def write(tmp_path: Path, text: str, name: str = "d.json") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------- plain files


def test_plain_file_is_read_in_order(tmp_path: Path) -> None:
    p = write(tmp_path, json.dumps({"dog": ["A dog barks.", "A dog runs."], "cat": ["A cat naps."]}))
    ds = load_descriptions(p)
    assert ds.names == ["dog", "cat"]
    assert ds.descriptions == [["A dog barks.", "A dog runs."], ["A cat naps."]]
    assert ds.meta == {} and not ds.has_provenance
    assert ds.source == str(p)


def test_plain_file_keeps_repeated_keys(tmp_path: Path) -> None:
    p = write(tmp_path, '{"crane": ["A bird."], "crane": ["A machine."], "dog": ["A dog."]}')
    ds = load_descriptions(p)
    assert ds.names == ["crane", "crane", "dog"]
    assert ds.for_classes(["crane", "crane", "dog"]) == [["A bird."], ["A machine."], ["A dog."]]
    # reordered: the k-th 'crane' asked for takes the k-th 'crane' of the file
    assert ds.for_classes(["dog", "crane", "crane"]) == [["A dog."], ["A bird."], ["A machine."]]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        ('{"a": ["x"],\n "b": ["y"]\n "c": []}', "line 3, column 2"),
        ('["a", "b"]', "expected a JSON object"),
        ("{}", "no classes"),
        ('{"a": "just a string"}', "must be a list of strings, got a string"),
        ('{"a": {"b": 1}}', "must be a list of strings, got an object"),
        ('{"a": ["ok", 3]}', "description 1 of class 'a' must be a string, got a number"),
        ('{"a": [null]}', "got null"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(DescriptionsError) as e:
        load_descriptions(p)
    assert expected in str(e.value)
    assert str(p) in str(e.value)
    assert isinstance(e.value, AWTError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DescriptionsError, match="not found"):
        load_descriptions(tmp_path / "nope.json")
    with pytest.raises(DescriptionsError, match="directory"):
        load_descriptions(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_bytes(b'{"caf\xe9": ["x"]}')
    with pytest.raises(DescriptionsError, match="not UTF-8"):
        load_descriptions(p)


# ---------------------------------------------------------------- lookup


def test_for_classes_normalised_lookup(tmp_path: Path) -> None:
    ds = DescriptionSet(["Apple_Pie", "baby back ribs"], [["pie."], ["ribs."]], {}, "x.json")
    assert ds.for_classes(["apple pie", "Baby_Back_Ribs"]) == [["pie."], ["ribs."]]
    assert ds.for_classes(["  APPLE   pie "]) == [["pie."]]
    assert normalize_name(" Baby_Back  Ribs ") == "baby back ribs"


def test_for_classes_exact_match_wins_over_normalised() -> None:
    ds = DescriptionSet(["apple pie", "Apple_Pie"], [["first."], ["second."]], {}, "x.json")
    assert ds.for_classes(["Apple_Pie"]) == [["second."]]


def test_for_classes_aligns_by_index_with_duplicate_names() -> None:
    names = ["missile", "tank", "missile"]
    ds = DescriptionSet(names, [["A missile."], ["A tank."], ["A projectile."]], {"per_class": 1}, "c.json")
    assert ds.for_classes(names) == [["A missile."], ["A tank."], ["A projectile."]]
    out = ds.for_classes(names)
    out[0].append("changed")
    assert ds.descriptions[0] == ["A missile."], "for_classes must return copies"


def test_missing_classes_are_named_with_count_and_file() -> None:
    ds = DescriptionSet(["a"], [["x."]], {}, "/data/d.json")
    with pytest.raises(DescriptionsError) as e:
        ds.for_classes(["a"] + [f"class{i}" for i in range(8)])
    msg = str(e.value)
    assert "/data/d.json" in msg and "8 of 9 classes" in msg
    assert "'class0'" in msg and "'class4'" in msg and "'class5'" not in msg and "and 3 more" in msg


def test_empty_description_list_is_an_error() -> None:
    ds = DescriptionSet(["a", "b"], [["x."], []], {"complete": False}, "c.json")
    with pytest.raises(DescriptionsError, match="empty description list .*'b'.*rerun"):
        ds.for_classes(["a", "b"])
    assert ds.for_classes(["a"]) == [["x."]]


# ---------------------------------------------------------------- cache format


def test_cache_round_trip_keeps_duplicates_and_meta(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "cache.json"
    p.parent.mkdir()
    meta = {"llm": "m", "endpoint_host": "127.0.0.1:8000", "questions": ["What is {}?"], "per_class": 2, "complete": True}
    save_descriptions(p, ["crane", "crane", "émeu"], [["a.", "b."], ["c.", "d."], ["e.", "f."]], meta)
    doc = json.loads(p.read_text(encoding="utf-8"))
    assert doc["format"] == FILE_FORMAT and doc["version"] == 1
    assert [c["index"] for c in doc["classes"]] == [0, 1, 2]
    assert "émeu" in p.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    ds = load_descriptions(p)
    assert ds.has_provenance and ds.meta == meta
    assert ds.names == ["crane", "crane", "émeu"]
    assert ds.for_classes(["crane", "crane", "émeu"]) == [["a.", "b."], ["c.", "d."], ["e.", "f."]]
    assert sorted(os.listdir(p.parent)) == ["cache.json"], "no temp files left behind"


def test_cache_classes_may_be_listed_out_of_order(tmp_path: Path) -> None:
    doc = {"format": FILE_FORMAT, "version": 1, "meta": {},
           "classes": [{"index": 1, "name": "b", "descriptions": ["B."]}, {"index": 0, "name": "a", "descriptions": ["A."]}]}
    ds = load_descriptions(write(tmp_path, json.dumps(doc)))
    assert ds.names == ["a", "b"] and ds.meta == {"complete": False}


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({"version": 2, "classes": []}, "newer than this awt"),
        ({"version": "1", "classes": []}, "integer 'version'"),
        ({"version": 1, "classes": {}}, "'classes' must be a list"),
        ({"version": 1, "classes": [{"index": 0, "name": "a"}, {"index": 0, "name": "b"}]}, "index 0 appears twice"),
        ({"version": 1, "classes": [{"index": 1, "name": "a"}]}, "without gaps"),
        ({"version": 1, "classes": [{"index": 0}]}, "no string 'name'"),
        ({"version": 1, "classes": [{"index": 0, "name": "a", "descriptions": "x"}]}, "must be a list of strings"),
        ({"version": 1, "meta": [], "classes": []}, "'meta' must be an object"),
    ],
)
def test_bad_cache_files(tmp_path: Path, doc: dict, expected: str) -> None:
    p = write(tmp_path, json.dumps({"format": FILE_FORMAT, **doc}))
    with pytest.raises(DescriptionsError, match=expected):
        load_descriptions(p)


def test_save_is_atomic_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "cache.json"
    save_descriptions(p, ["a"], [["old."]], {"per_class": 1})
    before = p.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_descriptions(p, ["a"], [["new."]], {"per_class": 1})
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["cache.json"]


def test_save_rejects_misaligned_lists(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_descriptions(tmp_path / "c.json", ["a", "b"], [["x."]], {})


# ---------------------------------------------------------------- published files


def _shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"published descriptions not available at {p}")
    return p


def test_published_awt_files_load() -> None:
    folder = _shared("awt")
    files = sorted(folder.glob("*.json"))
    assert files, f"no JSON files in {folder}"
    for f in files:
        ds = load_descriptions(f)
        assert not ds.has_provenance and len(ds) >= 10, f.name
        assert len(set(ds.names)) == len(ds.names), f"{f.name} has repeated class names"
        assert min(len(d) for d in ds.descriptions) >= 50, f.name
        assert ds.for_classes(ds.names) == ds.descriptions


def test_published_food101_by_normalised_names() -> None:
    ds = load_descriptions(_shared("awt", "food101.json"))
    assert "apple_pie" in ds.names
    got = ds.for_classes(["apple pie", "Baby Back Ribs"])
    assert got[0] == ds.descriptions[ds.names.index("apple_pie")]
    assert got[1] == ds.descriptions[ds.names.index("baby_back_ribs")]
    with pytest.raises(DescriptionsError, match="'pizza margherita'"):
        ds.for_classes(["apple pie", "pizza margherita"])


def test_published_cupl_imagenet_with_repeated_class_names() -> None:
    ds = load_descriptions(_shared("cupl", "imagenet.json"))
    assert len(ds) == 998 and all(len(d) == 150 for d in ds.descriptions)
    # ImageNet's label list repeats names (e.g. two 'missile'); CuPL's JSON has each once,
    # so both classes get that name's descriptions, in the order asked for
    got = ds.for_classes(["missile", "tench", "missile"])
    assert got[0] == got[2] == ds.descriptions[ds.names.index("missile")]
    assert got[1][0].startswith("A tench")
