import hashlib
import json

import pandas as pd
import pytest

from steep.config import SplitConfig, load_config
from steep.data import (
    DataError,
    cache_path,
    check_no_leakage,
    load_dataset,
    resolve_source,
    seed_cache,
    split_dataset,
)
from tests.conftest import REPO, SHARED_DATA


def config_for(tmp_path, source, **extra):
    sets = [f"data.source={source}", "data.sha256=null", f"project.home={tmp_path / 'home'}"]
    sets += [f"data.{k}={v}" for k, v in extra.items()]
    return load_config(REPO / "steep.yaml", sets, environ={})


ROWS = [
    {
        "uid": f"r{i}",
        "doc": f"d{i % 7}",
        "original_text": f"text number {i} " * 5,
        "reference_summary": f"sum {i}",
    }
    for i in range(40)
]


def write_rows(path, fmt):
    frame = pd.DataFrame(ROWS)
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif fmt == "json-list":
        path.write_text(json.dumps(ROWS))
    elif fmt == "json-keyed":
        path.write_text(json.dumps({r["uid"]: {k: v for k, v in r.items() if k != "uid"} for r in ROWS}))
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [
        ("jsonl", ".jsonl"),
        ("json-list", ".json"),
        ("json-keyed", ".json"),
        ("csv", ".csv"),
        ("parquet", ".parquet"),
    ],
)
def test_every_format_gives_the_same_canonical_table(tmp_path, fmt, suffix):
    path = tmp_path / f"data{suffix}"
    write_rows(path, fmt)
    ds = load_dataset(config_for(tmp_path, path))
    assert list(ds.frame.columns) == ["id", "group", "text", "summary"]
    assert len(ds.frame) == 40 and ds.frame.loc[3, "id"] == "r3" and ds.frame.loc[3, "group"] == "d3"
    # the same rows give the same digest whatever the file format
    reference = tmp_path / "ref.jsonl"
    write_rows(reference, "jsonl")
    assert ds.digest == load_dataset(config_for(tmp_path, reference)).digest


def test_upstream_legal_file_keyed_by_uid(tmp_path):
    cfg = load_config(
        REPO / "steep.yaml",
        [f"data.source={SHARED_DATA / 'all_v1.json'}", f"project.home={tmp_path}"],
        environ={},
    )
    ds = load_dataset(cfg)
    assert len(ds.frame) == 446 and ds.frame["group"].nunique() == 59
    assert ds.frame.set_index("id").loc["legalsum01", "summary"] == "hi."


def test_digest_changes_with_content(tmp_path):
    path = tmp_path / "d.jsonl"
    write_rows(path, "jsonl")
    before = load_dataset(config_for(tmp_path, path)).digest
    path.write_text(path.read_text().replace("sum 5", "sum five"))
    assert load_dataset(config_for(tmp_path, path)).digest != before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"uid": "a"}\n{broken\n', "line 2 is not valid JSON"),
        (b"[1, 2]", None),
        (b"", "empty"),
        (b'{"uid": "a", "original_text": "caf\xe9"}\n', "not UTF-8"),
    ],
)
def test_garbled_files(tmp_path, content, expected):
    path = tmp_path / ("d.json" if content == b"[1, 2]" else "d.jsonl")
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset(config_for(tmp_path, path))
    assert (expected or "record 0 is a int") in str(err.value)


def test_missing_column_lists_what_is_there(tmp_path):
    path = tmp_path / "d.jsonl"
    write_rows(path, "jsonl")
    with pytest.raises(DataError) as err:
        load_dataset(config_for(tmp_path, path, summary_column="abstract"))
    msg = str(err.value)
    assert "data.summary_column: 'abstract'" in msg and "reference_summary" in msg


def test_missing_file_and_folder_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(config_for(tmp_path, tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="is a folder"):
        load_dataset(config_for(tmp_path, tmp_path))
    odd = tmp_path / "d.txt"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"set data\.format"):
        load_dataset(config_for(tmp_path, odd))


def test_url_offline_says_how_to_seed_then_seed_works(tmp_path):
    source = SHARED_DATA / "all_v1.json"
    url = (
        "http://127.0.0.1:9/legal/all_v1.json"  # nothing listens on the discard port: a fast offline failure
    )
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    cfg = load_config(
        REPO / "steep.yaml",
        [f"data.source={url}", f"data.sha256={sha}", f"project.home={tmp_path}"],
        environ={},
    )
    with pytest.raises(DataError) as err:
        resolve_source(cfg)
    assert "steep data seed" in str(err.value) and str(cache_path(cfg)) in str(err.value)
    assert seed_cache(cfg, source) == cache_path(cfg)
    assert len(load_dataset(cfg).frame) == 446


def test_seed_refuses_a_file_with_the_wrong_checksum(tmp_path):
    cfg = load_config(
        REPO / "steep.yaml",
        ["data.source=http://127.0.0.1:9/x.json", f"data.sha256={'ab' * 32}", f"project.home={tmp_path}"],
        environ={},
    )
    with pytest.raises(DataError, match="sha256 is"):
        seed_cache(cfg, SHARED_DATA / "all_v1.json")
    assert not cache_path(cfg).exists()


# ------------------------------------------------------------------------------------------------ split
def test_split_has_no_leakage_and_is_seeded(legal_config):
    frame = load_dataset(legal_config).frame
    split = legal_config.data.split
    a = split_dataset(frame, split, seed=1)
    b = split_dataset(frame, split, seed=1)
    c = split_dataset(frame, split, seed=2)
    groups = [set(part["group"]) for _, part in a.items()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(p) for _, p in a.items()) == len(frame)
    assert a.digests == b.digests and a.digests != c.digests
    # fractions come out close even though two documents hold 192 of 446 rows
    assert abs(len(a.test) / len(frame) - split.test) < 0.03
    assert abs(len(a.train) / len(frame) - split.train) < 0.03


@pytest.mark.parametrize("seed", range(20))
def test_no_leakage_property_over_seeds_and_fractions(legal_config, seed):
    frame = load_dataset(legal_config).frame.sample(frac=0.7, random_state=seed)
    test = 0.1 + (seed % 5) * 0.05
    splits = split_dataset(frame, SplitConfig(train=0.9 - test, validation=0.1, test=test), seed)
    check_no_leakage(splits)  # raises on any shared group or id
    assert all(len(part) > 0 for _, part in splits.items())


def test_leakage_check_catches_a_shared_group(legal_config):
    splits = split_dataset(load_dataset(legal_config).frame, legal_config.data.split, 0)
    leaked = splits.test.iloc[:1].assign(id="new-id", group=splits.train["group"].iloc[0])
    broken = type(splits)(splits.train, splits.validation, pd.concat([splits.test, leaked]), splits.digests)
    with pytest.raises(DataError, match="leakage: group"):
        check_no_leakage(broken)


def test_too_few_groups_for_the_splits(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "group": ["g", "g"], "text": ["x", "y"], "summary": ["s", "t"]})
    with pytest.raises(DataError, match="only 1 distinct group"):
        split_dataset(frame, SplitConfig(), 0)
