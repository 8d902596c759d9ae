"""Bad EMBED input ends in one clear error naming the file or column (or a counted skip with skip_bad)."""

from __future__ import annotations

from pathlib import Path
import shutil

import pandas as pd
import pytest

from cleft_hf.data import load_embed, make_eval_transform
from cleft_hf.data.transforms import ImageDecodeError
from cleft_hf.demo.synthetic import write_demo_embed
from cleft_hf.modeling import CLEFTImageProcessor


@pytest.fixture(scope="module")
def embed_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-bad")
    write_demo_embed(root, 16, image_size=32, seed=1)
    return root


def test_missing_tables_name_the_table(tmp_path, embed_copy):
    (tmp_path / "images").symlink_to(embed_copy / "images")
    with pytest.raises(FileNotFoundError, match="EMBED_OpenData_metadata.csv"):
        load_embed(tmp_path)
    shutil.copytree(embed_copy / "tables", tmp_path / "tables")
    (tmp_path / "tables" / "EMBED_OpenData_clinical.csv").unlink()
    with pytest.raises(FileNotFoundError, match="EMBED_OpenData_clinical.csv"):
        load_embed(tmp_path)


def test_birads_code_outside_the_legend_names_the_column(tmp_path, embed_copy):
    shutil.copytree(embed_copy / "tables", tmp_path / "tables")
    (tmp_path / "images").symlink_to(embed_copy / "images")
    clinical = pd.read_csv(tmp_path / "tables" / "EMBED_OpenData_clinical.csv", dtype={"acc_anon": str})
    clinical.loc[3, "asses"] = "X"
    clinical.to_csv(tmp_path / "tables" / "EMBED_OpenData_clinical.csv", index=False)
    with pytest.raises(ValueError, match=r"'asses'.*EMBED_OpenData_clinical.csv"):
        load_embed(tmp_path)


def test_undecodable_dicom_is_named_or_skipped(tmp_path, embed_copy):
    root = Path(shutil.copytree(embed_copy, tmp_path / "embed"))
    broken = sorted((root / "images").rglob("*.dcm"))[0]
    broken.write_bytes(broken.read_bytes()[:400])  # a truncated file: header without pixel data
    with pytest.raises(ValueError, match=broken.name):
        load_embed(root, verify="decode")
    data, report = load_embed(root, verify="decode", skip_bad=True, return_report=True)
    assert report.bad_images == [str(broken)] and all(str(broken) not in list(d["image"]) for d in data.values())
    transform = make_eval_transform(CLEFTImageProcessor(size=32, crop_size=32))
    with pytest.raises(ImageDecodeError, match=broken.name):  # unverified at load time: named when decoded
        transform({"image": [str(broken)]})
