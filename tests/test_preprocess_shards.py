"""`python -m cleft_hf.data.preprocess --shard i/N`: N runs write disjoint parts of one resized copy whose union is
a single run's folder file for file; loaders read it only once the last shard wrote the manifest; a shard killed
part-way resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cleft_hf.data import load_mimic_cxr
from cleft_hf.data.load_cache import image_paths
from cleft_hf.data.preprocess import main as preprocess_main
from cleft_hf.data.preprocess import parse_shard, preprocess
from cleft_hf.data.resized_cache import MANIFEST
from cleft_hf.demo.synthetic import write_demo_mimic_cxr


def _images(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.suffix == ".png"}


def test_shards_write_the_single_run_folder_and_a_killed_shard_resumes(tmp_path, capsys):
    root = tmp_path / "mimic"
    write_demo_mimic_cxr(root, 24, image_size=64, seed=3, n_test_per_class=1, empty_report_rate=0.0)
    single = preprocess("mimic_cxr", root, 40, output_dir=tmp_path / "single", num_workers=1, progress=False)
    folder = root / "cleft_resized_40px"

    first = preprocess("mimic_cxr", root, 40, num_workers=1, progress=False, shard=(0, 3))
    assert not (folder / MANIFEST).exists()  # incomplete: the loaders keep reading the originals
    assert not any("cleft_resized" in path for path in image_paths(load_mimic_cxr(root)))
    # shard 1 killed part-way: a few PNGs written, one half-written temporary file, no shard record
    preprocess("mimic_cxr", root, 40, num_workers=1, progress=False, shard=(1, 3))
    (folder / "cleft_resized.shard-1-of-3.json").unlink()
    shard1 = sorted(_images(tmp_path / "single"))[1::3]  # every third image from the second on
    for relative in shard1[1:]:
        (folder / relative).unlink()
    (folder / f"{shard1[-1]}.tmp").write_bytes(b"\x89PNG half")
    assert (
        preprocess_main(
            [
                "--dataset",
                "mimic_cxr",
                "--data_root",
                str(root),
                "--size",
                "40",
                "--num_workers",
                "1",
                "--shard",
                "1/3",
            ]
        )
        == 0
    )
    assert "skipped=" in capsys.readouterr().out
    last = preprocess("mimic_cxr", root, 40, num_workers=1, progress=False, shard=(2, 3))

    sizes = [json.loads((folder / f"cleft_resized.shard-{i}-of-3.json").read_text())["images"] for i in range(3)]
    assert sum(sizes) == single["written"] and min(sizes) > 0 and first["written"] == sizes[0]
    assert last["written"] == sizes[2]
    assert _images(folder) == _images(tmp_path / "single")  # the same files, byte for byte; no temporary left
    assert not list(folder.rglob("*.tmp*"))
    assert json.loads((folder / MANIFEST).read_text()) == {
        **json.loads((tmp_path / "single" / MANIFEST).read_text()),
        "written": single["written"] - 1,
        "skipped": 1,
    }
    paths = image_paths(load_mimic_cxr(root))
    assert paths and all("cleft_resized_40px" in path for path in paths)  # the merged copy is read


def test_a_finished_folder_starts_no_worker_process(tmp_path, monkeypatch):
    root = tmp_path / "mimic"
    write_demo_mimic_cxr(root, 8, image_size=48, seed=1, n_test_per_class=1, empty_report_rate=0.0)
    done = preprocess("mimic_cxr", root, 32, num_workers=1, progress=False)
    monkeypatch.setattr("cleft_hf.data.preprocess.get_context", lambda *_: pytest.fail("a process pool started"))
    again = preprocess("mimic_cxr", root, 32, num_workers=4, progress=False, shard=(0, 1))
    assert again["written"] == 0 and again["skipped"] == done["written"] > 0


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_one_error_line(tmp_path, capsys, text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
    assert preprocess_main(["--dataset", "mimic_cxr", "--data_root", str(tmp_path), f"--shard={text}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
