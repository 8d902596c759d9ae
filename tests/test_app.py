"""examples/app/app.py served on 127.0.0.1 and called through gradio_client: real HTTP, real uploads."""

from __future__ import annotations

import os
from pathlib import Path
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
from PIL import Image
import pytest
import torch

gradio_client = pytest.importorskip(
    "gradio_client", reason="the app extra is not installed: pip install cleft-hf[app]"
)
pytest.importorskip("gradio", reason="the app extra is not installed: pip install cleft-hf[app]")

from conftest import FINDINGS  # noqa: E402
from tiny_models import tiny_cleft_config  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from cleft_hf import CLEFTImageProcessor, CLEFTModel, CLEFTProcessor  # noqa: E402
from cleft_hf.data.transforms import load_image  # noqa: E402
from cleft_hf.demo.dicom_writer import write_dicom  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "examples" / "app" / "app.py"
STARTUP_S = 240  # importing torch + gradio takes long on a busy machine
HAND = {name: f"a chest x ray with {name}." for name in FINDINGS[:3]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer_dirs):
    """A tiny model (hand prompts and learned prompts of task 'findings') saved, and the app serving it."""
    folder = tmp_path_factory.mktemp("app")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dirs["gpt2"])
    processor = CLEFTProcessor(CLEFTImageProcessor(size=32, crop_size=32), tokenizer, max_length=48)
    torch.manual_seed(0)
    model = CLEFTModel(tiny_cleft_config("gpt2", tokenizer, hand_prompts={"findings": HAND}))
    model.setup_prompt_learning(FINDINGS[:3], processor, task="findings")
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    log = open(folder / "app.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(APP), "--model", str(folder / "model")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: {(folder / 'app.log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield {"url": url, "folder": folder, "server": server}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _expected(folder: Path, path: Path, **kwargs) -> dict[str, float]:
    model = CLEFTModel.from_pretrained(folder / "model").eval()
    processor = CLEFTProcessor.from_pretrained(folder / "model")
    pixels = processor.image_processor(images=load_image(str(path)))["pixel_values"]
    probabilities = model.zero_shot_classify(pixels, processor=processor, **kwargs)[0]
    names = kwargs.get("class_names") or FINDINGS[:3]
    return dict(zip(names, probabilities.tolist()))


def _scores(label: dict) -> dict[str, float]:
    return {entry["label"]: entry["confidence"] for entry in label["confidences"]}


def test_uploads_give_the_probabilities_of_zero_shot_classify(served):
    folder = served["folder"]
    png = folder / "radiograph.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(png)
    dicom = folder / "radiograph.dcm"
    write_dicom(dicom, np.random.default_rng(1).integers(0, 4095, (48, 40)).astype(np.uint16), bits_stored=12)
    client = gradio_client.Client(served["url"], verbose=False)
    cases = [
        (png, "learned prompts: findings", "", {"use_learned_prompts": True, "task": "findings"}),
        (dicom, "hand prompts: findings", "", {"task": "findings"}),
        (png, "typed class names", "edema, cardiomegaly", {"class_names": ["edema", "cardiomegaly"]}),
    ]
    for path, prompt_set, typed, kwargs in cases:
        message, label, model_input, maps = client.predict(
            gradio_client.handle_file(str(path)), prompt_set, typed, 2, api_name="/classify"
        )
        assert message.startswith("Scored"), message
        expected = _expected(folder, path, **kwargs)
        assert _scores(label).keys() == expected.keys()
        for name, value in expected.items():
            assert _scores(label)[name] == pytest.approx(value, abs=1e-6), (prompt_set, name)
        assert np.asarray(Image.open(model_input)).shape[:2] == (32, 32)  # the processor's crop size
        assert min(Image.open(maps).size) > 100  # the similarity-map figure


def test_bad_files_get_a_message_and_the_server_stays_up(served):
    folder, client = served["folder"], gradio_client.Client(served["url"], verbose=False)
    not_an_image = folder / "notes.png"
    not_an_image.write_text("not an image at all")
    from pydicom import dcmread

    write_dicom(folder / "empty.dcm", np.zeros((2, 1), dtype=np.uint8))
    no_pixels = dcmread(folder / "empty.dcm")
    del no_pixels.PixelData
    no_pixels.save_as(folder / "empty.dcm")
    bomb = folder / "bomb.png"  # 81 M pixels of zeros: about 80 kB on disk
    Image.new("L", (9000, 9000)).save(bomb, optimize=True)
    huge_header = folder / "huge.dcm"  # a 60 000 x 60 000 header over 2 bytes of pixels
    write_dicom(huge_header, np.zeros((2, 1), dtype=np.uint8))
    header = dcmread(huge_header)
    header.Rows, header.Columns = 60000, 60000
    header.save_as(huge_header)
    expected = {
        not_an_image: "not an image",
        folder / "empty.dcm": "no pixel data",
        bomb: "9000 x 9000 pixels",
        huge_header: "60000 x 60000 pixels",
    }
    for path, reason in expected.items():
        message, label, model_input, maps = client.predict(
            gradio_client.handle_file(str(path)), "typed class names", "edema", 1, api_name="/classify"
        )
        assert message.startswith("**Cannot use this file:**") and reason in message, message
        assert not label and model_input is None and maps is None  # an empty Label reads back as {}
    assert served["server"].poll() is None  # still serving, and no bad file was decoded in full
    assert _peak_rss_mb(served["server"].pid) < 2000
    good = folder / "good.png"
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(good)
    message, *_ = client.predict(
        gradio_client.handle_file(str(good)), "typed class names", "edema", 1, api_name="/classify"
    )
    assert message.startswith("Scored"), message
