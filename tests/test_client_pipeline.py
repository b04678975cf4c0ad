"""The client's image encoding (issue 11): lossless PNG at a fast setting, grey images as one channel."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from napari_fracto.backends.base import Turn, VLMRequest
from napari_fracto.backends.openai_backend import OpenAIBackend
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer


def _sent(image: Image.Image) -> Image.Image:
    """The image as the server received it, over real HTTP."""
    with FakeOpenAIServer(answer='{"labels": []}') as server:
        backend = OpenAIBackend("fake-model", base_url=server.base_url)
        backend.generate(VLMRequest([Turn("user", ["Which features?", image])], max_new_tokens=8))
        backend.close()
        (data,) = server.chat_requests()[-1].images()
    assert data.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(data))


def test_a_grey_image_given_as_rgb_arrives_as_the_same_grey_pixels():
    grey = np.random.default_rng(0).integers(0, 256, (120, 90), dtype=np.uint8)
    received = _sent(Image.fromarray(np.stack([grey] * 3, axis=-1)))
    assert received.mode == "L"  # a third of the bytes to encode and send
    np.testing.assert_array_equal(np.asarray(received), grey)


def test_a_colour_image_arrives_pixel_for_pixel():
    rgb = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 20, 30)  # channels differ somewhere: must stay colour
    received = _sent(Image.fromarray(rgb))
    assert received.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(received), rgb)


def test_sixteen_bit_microscope_data_reaches_the_server_losslessly_after_normalising():
    from napari_fracto.imaging import prepare_model_image

    raw = np.random.default_rng(2).integers(0, 65535, (100, 100), dtype=np.uint16)
    shown = prepare_model_image(raw, 1024)
    received = _sent(shown)
    np.testing.assert_array_equal(np.asarray(received.convert("RGB")), np.asarray(shown))
